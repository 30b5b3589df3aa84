"""The effective policy of a compiled route, as `bastion explain`, `bastion diff`, the drift watch and the
posture report show it: each control with its value and where that value comes from."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from bastion.compile import CompiledRoute
from bastion.config.models import SECTIONS
from bastion.posture.controls import plan_at
from bastion.stages import authz
from bastion.stages.input.crs import check as crs


def _iso(ts: float) -> str:
    return "never" if math.isinf(ts) else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def route_policy(route: CompiledRoute, authz_shared: Any = None, *, now: float) -> dict[str, Any]:
    """The effective policy of a route at `now` (the plan the data plane enforces then), each control with its
    value and source.

    With the authorisation layer's shared object (from a compile that built stages), also the route's
    authorisation requirements, one line each.
    """
    plan = plan_at(route, now)
    info = route.info
    sources = plan_sources(route, plan)
    controls: dict[str, Any] = {}
    for section in SECTIONS:
        policy = getattr(plan.policy, section)
        waived = dict(plan.waived).get(section)
        for name, value in policy.model_dump(mode="json").items():
            control = f"{section}.{name}"
            source = sources.get(control) or sources.get(section) or f"class:{info.klass}"
            entry: dict[str, Any] = {"value": value, "source": source}
            if waived:
                entry = {"value": "waived", "source": f"exception:{waived}"}
            controls[control] = entry
    return {
        "authorization": authz.explain(plan.policy.authz, info, authz_shared) if authz_shared else [],
        "inspection": crs.explain(plan.policy.input.crs),  # the CRS rule set in force: version, hash, paranoia
        "route": info.route_id, "api": info.api, "class": info.klass, "path": info.path,
        "methods": sorted(info.methods), "administrative": route.admin,
        "upstream": f"{route.upstream.scheme}://{route.upstream.authority}{route.upstream.path_prefix}",
        "exceptions": [{"id": e, "expires": _iso(plan.valid_until)} for e in plan.exceptions],
        "policy_changes_at": _iso(plan.valid_until),
        "controls": controls,
    }


def plan_sources(route: CompiledRoute, plan: Any) -> dict[str, str]:
    """Where each control of `plan` comes from (a plan built before `Plan.info` existed: the route's first)."""
    return (plan.info or route.info).sources
