"""Identity control: who is calling (JWT, API key, client certificate, introspection).

`prepare(config, services)` builds the shared state once per config load (an `IdentityShared`: call its
`async start()` after loading and `async close()` when the config is replaced); `build(policy, route, shared)`
builds the stage of one route.
"""

from __future__ import annotations

from typing import Any

from bastion.stages.base import RouteInfo, Services
from bastion.stages.identity.config import ConsumerConfig, IdentityPolicy, ProvidersConfig
from bastion.stages.identity.consumers import new_api_key
from bastion.stages.identity.shared import DEFAULT_PROTECTED, IdentityShared
from bastion.stages.identity.stage import IdentityStage

__all__ = [
    "ConsumerConfig",
    "IdentityPolicy",
    "IdentityShared",
    "IdentityStage",
    "ProvidersConfig",
    "build",
    "new_api_key",
    "prepare",
]


def prepare(config: Any, services: Services) -> IdentityShared:
    """Shared per config load: provider key caches, verifiers, consumer index, revocation list.

    Reads `config.providers`, `config.consumers` and `config.gateway.identity_headers`.
    """
    gateway = getattr(config, "gateway", None)
    headers = getattr(gateway, "identity_headers", None) or DEFAULT_PROTECTED
    return IdentityShared(config.providers, list(config.consumers), services, identity_headers=headers)


def build(policy: IdentityPolicy, route: RouteInfo, shared: IdentityShared) -> IdentityStage | None:
    """The identity stage of one route; None only when identity is not required and no method is accepted."""
    if not policy.required and not policy.methods:
        return None
    if not isinstance(shared, IdentityShared):
        raise TypeError("identity.build needs the IdentityShared returned by identity.prepare")
    return IdentityStage(policy, route, shared)
