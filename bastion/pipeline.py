"""The order of the pipeline, in one place, what its layers prepare once per config, and the loop that runs it.

Cheap network checks come before identity (they protect the identity provider), rate limits after identity
and authorisation (so they can count per consumer), input inspection last (it may read the body). The response
controls come at the end: built the same way, they act on the upstream's answer.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bastion import stages
from bastion.context import ControlRecord, Deny, RequestContext
from bastion.policy_ids import gateway as gateway_id
from bastion.stages import authz, blocklist, flows, graphql, identity, response, traffic, transport
from bastion.stages import input as input_stage
from bastion.stages.base import RouteInfo, Services, Shared, Stage


@dataclass(slots=True)
class Prepared:
    """What the layers prepared once for one config load, each under its own name (None: not built, e.g. for
    `validate`, or the process has none). Every route's stages of a layer share its object."""

    transport: Any = None  # bastion.stages.transport.revocation.Revocation: CRLs and OCSP (`gateway.revocation`)
    traffic: traffic.TrafficShared | None = None
    blocks: Any = None  # bastion.audit.blocks.BlockList: the process's, from `Services.blocks`
    identity: identity.IdentityShared | None = None
    authz: authz.AuthzShared | None = None
    input: input_stage.InputShared | None = None
    graphql: Any = None  # bastion.stages.graphql.analysis.DocumentCache
    response: response.ResponseShared | None = None
    flows: Any = None  # bastion.stages.flows.stage.FlowShared: the business flows and their state
    admin_auth: Shared | None = None  # bastion.posture.admin_auth.AdminAuth, set by the runtime

    def lifecycle(self) -> list[Shared]:
        """The objects to start after compiling, check for readiness and close with this config. The block list
        is not one of them: it belongs to the process and outlives every config."""
        return [s for s in (self.traffic, self.identity, self.authz, self.admin_auth) if s is not None]


def prepare(config: Any, services: Services, problems: list[str]) -> Prepared:
    """Each layer's shared object for `config`. A layer that refuses the config (a cross-section rule, e.g. two
    consumers with one name) adds a problem and gets None."""

    def attempt(section: str, build: Callable[[Any, Services], Any]) -> Any:
        try:
            return build(config, services)
        except ValueError as error:
            problems.append(f"{section}: {error}")
            return None

    return Prepared(
        transport=attempt("transport", transport.prepare),
        traffic=attempt("traffic", traffic.prepare),
        blocks=blocklist.prepare(config, services),
        identity=attempt("identity", identity.prepare),
        authz=attempt("authz", authz.prepare),
        input=attempt("input", input_stage.prepare),
        graphql=attempt("graphql", graphql.prepare),
        response=attempt("response", response.prepare),
        flows=attempt("flows", flows.prepare),
    )


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One step of the pipeline: the Baseline section it reads, how to build it for a route, and which prepared
    object it shares with the other routes (`shared`, a typed accessor on `Prepared`).

    `section=None`: not a baseline control (always on, cannot be waived), e.g. detection blocks.
    `phase="response"`: a control on the upstream's answer (the route's `ResponseFilter`), not on the request.
    """

    section: str | None
    build: Callable[[Any, RouteInfo, Any], Any]
    shared: Callable[[Prepared], Any] | None = None
    phase: Literal["request", "response"] = "request"


PIPELINE: tuple[StageSpec, ...] = (
    StageSpec("transport", transport.build, lambda p: p.transport),  # TLS, mTLS, client-certificate revocation
    StageSpec("traffic", traffic.build_ip_rules, lambda p: p.traffic),
    StageSpec(None, blocklist.build, lambda p: p.blocks),  # blocked source addresses, before any work
    StageSpec("identity", identity.build, lambda p: p.identity),
    StageSpec(None, blocklist.build, lambda p: p.blocks),  # blocked subjects and consumers, now known
    StageSpec("authz", authz.build, lambda p: p.authz),
    StageSpec("traffic", traffic.build_rate_limits, lambda p: p.traffic),
    StageSpec("input", input_stage.build_head, lambda p: p.input),
    StageSpec(None, flows.build, lambda p: p.flows),  # business flows (API6): a step counts once its head is valid
    StageSpec("input", input_stage.build_body, lambda p: p.input),  # needs_body: runs once the body is read
    StageSpec("graphql", graphql.build, lambda p: p.graphql),  # depth, cost, aliases, introspection, op scopes
    StageSpec("authz", authz.build_body, lambda p: p.authz),  # owner rules on body ids, after the body is valid
    # contract filtering, 5xx rewriting, security headers, CORS (preflights are answered before the stages)
    StageSpec("response", response.build, lambda p: p.response, phase="response"),
)

__all__ = ["PIPELINE", "Prepared", "StageSpec", "prepare", "run", "stages"]


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
            ctx.records.append(ControlRecord(stage.control, "deny", decision.policy_id, decision.reason))
            return decision
        if decision.policy_id:  # a bare CONTINUE (e.g. no block in force) decided nothing worth recording
            ctx.records.append(ControlRecord(stage.control, "allow", decision.policy_id, "",
                                             decision.exception_id))  # type: ignore[union-attr]
    return None
