"""Baselines, exceptions and (later) inventory and posture reports."""
