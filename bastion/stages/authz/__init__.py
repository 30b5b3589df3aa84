"""Authorisation control: scopes, roles, conditions, object ownership, policy engines."""

from __future__ import annotations

from typing import Any

from bastion.stages.authz.config import AuthzPolicy
from bastion.stages.base import RouteInfo, Services


def prepare(config: Any, services: Services) -> Any:
    """Shared per config load (decision caches, engine clients). Filled in by the authorisation layer."""
    return None


def build(policy: AuthzPolicy, route: RouteInfo, shared: Any) -> Any:
    return None
