"""Identity control: who is calling (JWT, API key, client certificate, introspection)."""

from __future__ import annotations

from typing import Any

from bastion.stages.base import RouteInfo, Services
from bastion.stages.identity.config import IdentityPolicy


def prepare(config: Any, services: Services) -> Any:
    """Shared per config load: provider key sets, consumer index. (Filled in by the identity layer.)"""
    return None


def build(policy: IdentityPolicy, route: RouteInfo, shared: Any) -> Any:
    """The identity stage of one route, or None when identity is not required."""
    return None
