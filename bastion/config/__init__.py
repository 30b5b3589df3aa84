"""Bastion's configuration: pydantic models per YAML section, and the loader that reports file:line:col."""
