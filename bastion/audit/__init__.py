"""Audit events (OCSF-shaped), their queue and their sinks."""
