"""The order of the pipeline, in one place, and the loop that runs it.

Cheap network checks come before identity (they protect the identity provider), rate limits after identity
and authorisation (so they can count per consumer), input inspection last (it may read the body).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bastion import stages
from bastion.context import ControlRecord, Deny, RequestContext
from bastion.policy_ids import gateway as gateway_id
from bastion.stages import authz, blocklist, flows, graphql, identity, traffic, transport
from bastion.stages import input as input_stage
from bastion.stages.base import RouteInfo, Services, Stage


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One step of the pipeline: the Baseline section it reads and how to build it for a route.

    `section=None`: not a baseline control (always on, cannot be waived), e.g. detection blocks.
    """

    section: str | None
    build: Callable[[Any, RouteInfo, Any], Stage | None]
    prepare: Callable[[Any, Services], Any] | None = None


PIPELINE: tuple[StageSpec, ...] = (
    StageSpec("transport", transport.build, transport.prepare),  # TLS, mTLS, client-certificate revocation
    StageSpec("traffic", traffic.build_ip_rules, traffic.prepare),
    StageSpec(None, blocklist.build, blocklist.prepare),  # blocked source addresses, before any work
    StageSpec("identity", identity.build, identity.prepare),
    StageSpec(None, blocklist.build, blocklist.prepare),  # blocked subjects and consumers, now known
    StageSpec("authz", authz.build, authz.prepare),
    StageSpec("traffic", traffic.build_rate_limits, traffic.prepare),
    StageSpec("input", input_stage.build_head, input_stage.prepare),
    StageSpec(None, flows.build, flows.prepare),  # business flows (API6): a step counts once its head is valid
    StageSpec("input", input_stage.build_body, input_stage.prepare),  # needs_body: runs once the body is read
    StageSpec("graphql", graphql.build, graphql.prepare),  # depth, cost, aliases, introspection, op scopes
    StageSpec("authz", authz.build_body, authz.prepare),  # owner rules on body ids, after the body is valid
)

__all__ = ["PIPELINE", "StageSpec", "run", "stages"]


async def run(chain: tuple[Stage, ...], ctx: RequestContext) -> Deny | None:
    """Run the route's stages in order; the first Deny ends the request. A stage that raises is a deny."""
    for stage in chain:
        try:
            decision = await stage.check(ctx)
        except Exception as exc:  # fail closed: a bug in a control never lets a request through
            detail = "".join(traceback.format_exception_only(exc)).strip()
            decision = Deny(500, "stage_error", gateway_id(f"stage.{stage.control}", ctx.api, ctx.route),
                            log_detail=f"{detail}\n{traceback.format_exc(limit=6)}")
        if decision.__class__ is Deny:
            ctx.records.append(ControlRecord(stage.control, "deny", decision.policy_id, decision.reason))  # type: ignore[union-attr]
            return decision  # type: ignore[return-value]
        if decision.policy_id:  # a bare CONTINUE (e.g. no block in force) decided nothing worth recording
            ctx.records.append(ControlRecord(stage.control, "allow", decision.policy_id, "",
                                             decision.exception_id))  # type: ignore[union-attr]
    return None
