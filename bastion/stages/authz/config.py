"""Config model of the authorisation layer."""

from __future__ import annotations

from bastion.config.base import Model


class AuthzPolicy(Model):
    """`authz: {...}` (filled in by the authorisation layer)."""
