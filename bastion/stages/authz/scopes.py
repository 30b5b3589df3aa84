"""Scope requirements: the OpenAPI operation's `security` (OR of requirement objects, AND within one), plus the
scopes config adds to every alternative.

OpenAPI 3 §4.8.10: `security: [{oauth: [a, b]}, {oauth: [c]}]` means (a AND b) OR c; an empty requirement `{}`
lets anonymous callers in; `security: []` on an operation removes every requirement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.stages.authz.config import SCOPE_TOKEN, AuthzPolicy
from bastion.stages.base import RouteInfo


@dataclass(frozen=True, slots=True)
class ScopeRequirement:
    """What a route asks of a caller's scopes."""

    always: frozenset[str]  # from config: required whatever the alternative
    alternatives: tuple[frozenset[str], ...]  # from OpenAPI: one of these sets (empty tuple: none declared)
    anonymous: bool  # OpenAPI allows `{}`: a caller without identity passes the scope check

    @property
    def declared(self) -> bool:
        """Every caller needs at least one scope (what `require_scopes` demands)."""
        if self.always:
            return True
        return bool(self.alternatives) and not self.anonymous and all(self.alternatives)

    @property
    def active(self) -> bool:
        """There is something to check for an authenticated caller."""
        return bool(self.always) or (bool(self.alternatives) and all(self.alternatives) and not self.anonymous)

    @property
    def needs_identity(self) -> bool:
        return bool(self.always) or (bool(self.alternatives) and not self.anonymous)

    def missing(self, granted: frozenset[str]) -> frozenset[str] | None:
        """None when `granted` satisfies the requirement, else the scopes of the closest alternative it lacks."""
        if not self.alternatives and self.always.issubset(granted):  # config scopes only, all granted: no new set
            return None
        lacking = self.always - granted
        if not self.alternatives or self.anonymous:  # `{}` is an alternative anyone satisfies
            return lacking or None
        best: frozenset[str] | None = None
        for alternative in self.alternatives:
            gap = alternative - granted
            if not gap:
                return lacking or None
            if best is None or len(gap) < len(best):
                best = gap
        return lacking | (best or frozenset())

    def advertised(self) -> tuple[str, ...]:
        """The scope set named in `WWW-Authenticate` (RFC 6750 §3): config scopes and the first alternative."""
        first = next((alt for alt in self.alternatives if alt), frozenset())
        return tuple(sorted(self.always | first))

    def describe(self) -> str:
        parts = []
        if self.alternatives:
            alts = " | ".join("[" + " ".join(sorted(a)) + "]" if a else "[authenticated]" for a in self.alternatives)
            parts.append(f"openapi: {alts}" + (" | anonymous" if self.anonymous else ""))
        if self.always:
            parts.append("config: " + " ".join(sorted(self.always)))
        return "; ".join(parts) or "none"


def requirement(policy: AuthzPolicy, route: RouteInfo) -> ScopeRequirement:
    """The route's scope requirement. Raises ValueError for a scope that cannot be put in a header."""
    alternatives: list[frozenset[str]] = []
    anonymous = False
    operation = route.operation or {}
    security: Any = operation.get("security")
    for item in security or ():
        if not isinstance(item, dict):
            raise ValueError(f"route {route.route_id}: OpenAPI security requirement {item!r} is not an object")
        if not item:
            anonymous = True
            continue
        scopes: set[str] = set()
        for scheme, values in item.items():
            for scope in values or ():
                if not isinstance(scope, str) or not SCOPE_TOKEN.match(scope):
                    raise ValueError(f"route {route.route_id}: scope {scope!r} of security scheme {scheme!r} is "
                                     "not a valid scope token (RFC 6749 §3.3)")
                scopes.add(scope)
        alternatives.append(frozenset(scopes))
    return ScopeRequirement(frozenset(policy.scopes), tuple(alternatives), anonymous)


def missing_scopes(route: RouteInfo, policy: AuthzPolicy) -> bool:
    """For `validate`: the class requires declared scopes and this route declares none."""
    return policy.require_scopes and not requirement(policy, route).declared


def challenge(scopes: tuple[str, ...] = (), *, insufficient: bool = False) -> tuple[tuple[str, str], ...]:
    """RFC 6750 §3: no error attribute when no credential was sent; `insufficient_scope` with the scope list."""
    if not insufficient:
        return (("www-authenticate", 'Bearer realm="bastion"'),)
    value = 'Bearer realm="bastion", error="insufficient_scope"'
    if scopes:
        value += f', scope="{" ".join(scopes)}"'
    return (("www-authenticate", value),)
