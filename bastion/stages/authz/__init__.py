"""Authorisation control: scopes, roles, conditions, object ownership, policy engines.

Pipeline entries (both read the `authz` section of the baseline):
    StageSpec("authz", authz.build, authz.prepare)        # head: scopes, roles, conditions, owner, OPA, Cedar
    StageSpec("authz", authz.build_body, authz.prepare)   # needs_body: owner rules on JSON body fields

`prepare(config, services)` returns an `AuthzShared` (call `await shared.close()` when the config is replaced).
`missing_scopes` / `missing_owner` answer `validate`'s class rules; `explain(policy, route, shared)` lists a
route's requirements with their policy ids.
"""

from __future__ import annotations

from typing import Any

from bastion.stages.authz.config import AuthzPolicy
from bastion.stages.authz.scopes import missing_scopes
from bastion.stages.authz.stage import AuthzBodyStage, AuthzShared, AuthzStage, missing_owner
from bastion.stages.base import RouteInfo, Services

__all__ = [
    "AuthzBodyStage",
    "AuthzPolicy",
    "AuthzShared",
    "AuthzStage",
    "build",
    "build_body",
    "explain",
    "missing_owner",
    "missing_scopes",
    "prepare",
]


def prepare(config: Any, services: Services) -> AuthzShared:
    """Shared per config load: the CEL environment, the HTTP client to OPA/ownership services, decision caches.

    Reads `config.consumers` (a consumer's `tenant`, for `equals: consumer_tenant`).
    """
    return AuthzShared(config, services or Services())


def _shared(shared: Any) -> AuthzShared:
    if not isinstance(shared, AuthzShared):
        raise TypeError("authz.build needs the AuthzShared returned by authz.prepare")
    return shared


def build(policy: AuthzPolicy, route: RouteInfo, shared: Any) -> AuthzStage | None:
    """The head stage of one route; None when nothing is required before the body. Raises ValueError for a
    config error of this route (a condition that does not type-check, a missing admin role, a class rule)."""
    stage = AuthzStage(policy, route, _shared(shared))
    return stage if stage.enabled else None


def build_body(policy: AuthzPolicy, route: RouteInfo, shared: Any) -> AuthzBodyStage | None:
    """The body stage of one route, when an owner rule reads the JSON body; None otherwise."""
    if not any(rule.on_body for rule in policy.owner):
        return None
    try:
        head = AuthzStage(policy, route, _shared(shared))
    except ValueError:
        return None  # `build` reports the same error for this route
    return AuthzBodyStage(head)


def explain(policy: AuthzPolicy, route: RouteInfo, shared: Any) -> list[str]:
    """The route's authorisation requirements, one line each with its policy id (empty: none)."""
    try:
        return AuthzStage(policy, route, _shared(shared)).requirements()
    except ValueError as exc:
        return [f"invalid: {exc}"]
