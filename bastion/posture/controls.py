"""What a route's effective policy demands, read from its plan.

The layers that are still growing (authorisation, input) are read by attribute, so this module keeps working as
their config models gain fields: a control the model does not have yet is simply "not required".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.compile import CompiledRoute, Plan


@dataclass(frozen=True, slots=True)
class Demands:
    """The refusals a route's effective policy promises, in pipeline order."""

    tls: bool
    mtls: bool
    identity: bool  # the identity stage runs (a sent credential is verified)
    identity_required: bool  # anonymous callers are refused
    jwt: bool  # JWT bearer tokens are an accepted credential
    scopes: tuple[str, ...]  # scopes a caller needs (one requirement, AND)
    owner_rule: bool
    max_body_bytes: int
    rate_limits: tuple[Any, ...]
    contract: bool
    undeclared_reject: bool
    inspection_block: bool


def plan_at(route: CompiledRoute, now: float) -> Plan:
    """The plan the data plane enforces at `now`, read without consuming the schedule (the request path's
    `route.plan(now)` drops plans that ended; evidence may look at any instant the schedule still holds)."""
    for plan in route.plans:
        if now < plan.valid_until:
            return plan
    return route.plans[-1]


def section(plan: Plan, name: str) -> Any:
    """The policy section, or None when the model has no such section or an exception waives it."""
    if name in dict(plan.waived):
        return None
    return getattr(plan.policy, name, None)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple | set | frozenset):
        out: list[str] = []
        for item in value:
            out += _strings(item) if isinstance(item, list | tuple) else [str(item)]
        return out
    return []


def required_scopes(route: CompiledRoute, plan: Plan) -> tuple[str, ...]:
    """Scopes the route requires: the authz section's, or the first OpenAPI security requirement's."""
    authz = section(plan, "authz")
    if authz is None:
        return ()
    for name in ("scopes", "required_scopes"):
        value = getattr(authz, name, None)
        if isinstance(value, list | tuple) and value and isinstance(value[0], list | tuple):
            return tuple(_strings(value[0]))  # OR of requirements: the first one is enough to pass
        if value:
            return tuple(_strings(value))
    operation = route.info.operation or {}
    for requirement in operation.get("security") or []:
        if isinstance(requirement, dict):
            scopes = [s for values in requirement.values() for s in _strings(values)]
            if scopes:
                return tuple(scopes)
    return ()


def has_owner_rule(plan: Plan) -> bool:
    authz = section(plan, "authz")
    return bool(authz is not None and (getattr(authz, "owner", None) or getattr(authz, "owners", None)))


def demands(route: CompiledRoute, plan: Plan) -> Demands:
    transport = section(plan, "transport")
    identity = section(plan, "identity")
    traffic = section(plan, "traffic")
    inputs = section(plan, "input")
    return Demands(
        tls=bool(transport is not None and (transport.tls == "required" or transport.mtls == "required")),
        mtls=bool(transport is not None and transport.mtls == "required"),
        identity=identity is not None,
        identity_required=bool(identity is not None and identity.required),
        jwt=bool(identity is not None and "jwt" in identity.methods),
        scopes=required_scopes(route, plan),
        owner_rule=has_owner_rule(plan),
        max_body_bytes=plan.policy.traffic.max_body_bytes,
        rate_limits=tuple(getattr(traffic, "rate_limits", ()) or ()) if traffic is not None else (),
        contract=getattr(inputs, "contract", "off") == "enforce",
        undeclared_reject=getattr(inputs, "undeclared", "allow") == "reject",
        inspection_block=getattr(inputs, "inspection", "off") == "block",
    )
