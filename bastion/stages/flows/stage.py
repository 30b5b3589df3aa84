"""The flow stage: one per route that is a step of some flow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bastion.context import Continue, ControlRecord, Decision, Deny, RequestContext
from bastion.stages.base import RouteInfo, Services
from bastion.stages.flows.config import FlowConfig, FlowStep
from bastion.stages.signals import ClientSignals, signals_for
from bastion.stages.traffic.keys import KeyFunction, key_function
from bastion.state import Hit
from bastion.state.memory import MemoryState

# A step's "mark" (the caller did it, at time t) lives in the shared state as an expiring entry whose expiry
# is t + ttl: the backend's block entries (kind "flow", never listed as blocks) are exactly that.
MARK = "flow"
FLOW_REASONS = frozenset({"flow_order", "flow_tempo", "flow_limit"})


@dataclass(frozen=True, slots=True)
class FlowShared:
    """The flows by route id, the marks' lifetimes and the shared state, built once per config."""

    steps: dict[str, list[tuple[FlowConfig, FlowStep]]]
    mark_ttl: dict[tuple[str, str], float]  # (flow, step) -> how long later steps look back at it
    state: Any
    clock: Callable[[], float]
    signals: ClientSignals | None = None


def prepare(config: Any, services: Services) -> FlowShared:
    steps: dict[str, list[tuple[FlowConfig, FlowStep]]] = {}
    ttl: dict[tuple[str, str], float] = {}
    for flow in config.flows:
        for step in flow.steps:
            steps.setdefault(step.route, []).append((flow, step))
            if step.after is not None:
                ttl[(flow.name, step.after)] = max(ttl.get((flow.name, step.after), 0.0), step.within)
    # without a backend (compiling for `validate`, unit tests) a private in-memory one: never no check at all
    state = services.state if services.state is not None else MemoryState(services.wall_clock)
    uses_signals = any(f.countries is not None or f.refuse_reputation for f in config.flows)
    signals = signals_for(config, services.monotonic) if uses_signals else None
    return FlowShared(steps, ttl, state, services.wall_clock, signals)


def flow_diagnostics(flows: list[FlowConfig], routes: dict[str, set[str]]) -> list[tuple[tuple[Any, ...], str]]:
    """(location, message) for every step naming a route that does not exist; names/ids must match exactly."""
    found: list[tuple[tuple[Any, ...], str]] = []
    names = {f.name for f in flows}
    if len(names) != len(flows):
        found.append((("flows",), "two flows have the same name"))
    for i, flow in enumerate(flows):
        for j, step in enumerate(flow.steps):
            api, _, route = step.route.partition("/")
            if route not in routes.get(api, set()):
                found.append((("flows", i, "steps", j, "route"), f"flow {flow.name!r} step {step.name!r}: "
                              f"unknown route {step.route!r}"))
    return found


class _StepCheck:
    """One (flow, step) of this route, prepared: its key, its marks and limits."""

    def __init__(self, flow: FlowConfig, step: FlowStep, route: RouteInfo, shared: FlowShared) -> None:
        self.flow, self.step = flow.name, step.name
        self.key: KeyFunction = key_function(flow.key, route)
        self.after = step.after
        self.after_ttl = shared.mark_ttl.get((flow.name, step.after), 0.0) if step.after else 0.0
        self.within, self.min_gap = step.within, step.min_gap
        self.mark_ttl = shared.mark_ttl.get((flow.name, step.name))  # None: no later step looks at this one
        self.refuse = flow.on_violation == "refuse"
        self.countries = frozenset(flow.countries) if flow.countries is not None else None
        self.bad_lists = frozenset(flow.refuse_reputation)
        self.signals = shared.signals
        self.policy_id = f"flow:{flow.name}/{route.route_id}/flows.{step.name}"
        self.limits: list[tuple[str, int, float]] = []
        if step.max is not None:
            self.limits.append((f"fl:{flow.name}:{step.name}:", step.max, step.per))
        if flow.max is not None:
            self.limits.append((f"fl:{flow.name}:*:", flow.max, flow.per))

    def mark_key(self, step: str, who: str) -> str:
        return f"{self.flow}:{step}:{who}"


class FlowStage:
    """Refuses (or flags) a step taken out of order or too fast, and a flow used beyond its limits."""

    control = "flows"
    needs_body = False

    def __init__(self, checks: list[_StepCheck], state: Any, clock: Callable[[], float]) -> None:
        self._checks = checks
        self._state = state
        self._clock = clock
        self._allow = Continue(checks[0].policy_id)

    async def check(self, ctx: RequestContext) -> Decision:
        now = self._clock()
        for check in self._checks:
            decision = await self._one(check, ctx, now)
            if decision is not None:
                return decision
        return self._allow

    async def _one(self, check: _StepCheck, ctx: RequestContext, now: float) -> Deny | None:
        who = check.key(ctx)
        if check.signals is not None:
            refused = _client_refused(check, check.signals.lookup(ctx.client_ip))
            if refused is not None:
                return Deny(403, "flow_client", check.policy_id, "This step of the flow is not allowed now.",
                            log_detail=f"flow {check.flow}, step {check.step}, client {ctx.client_ip}: {refused}")
        if check.after is not None:
            violation = await self._order(check, who, now)
            if violation is not None:
                reason, detail = violation
                log = f"flow {check.flow}, step {check.step}, key {who}: {detail}"
                if check.refuse:
                    return Deny(403, reason, check.policy_id, "This step of the flow is not allowed now.",
                                log_detail=log)
                ctx.records.append(ControlRecord("flows", "flag", check.policy_id, reason))
        if check.limits:
            hits = [Hit(prefix + who, "sliding_window", limit, period) for prefix, limit, period in check.limits]
            outcomes = await self._state.hit(hits, now)
            for outcome, (prefix, limit, period) in zip(outcomes, check.limits, strict=True):
                if not outcome.allowed:
                    scope = "the flow" if prefix.endswith(":*:") else f"step {check.step}"
                    retry = max(1, int(outcome.retry_after + 0.999))
                    return Deny(429, "flow_limit", check.policy_id, "This flow's limit is reached.",
                                headers=(("retry-after", str(retry)),),
                                log_detail=f"flow {check.flow}, step {check.step}, key {who}: {scope} at most "
                                f"{limit} per {period:g}s")
        if check.mark_ttl is not None:
            await self._state.block(MARK, check.mark_key(check.step, who), now + check.mark_ttl)
        return None

    async def _order(self, check: _StepCheck, who: str, now: float) -> tuple[str, str] | None:
        until = await self._state.is_blocked(MARK, check.mark_key(check.after or "", who), now)
        if until is None or now - (until - check.after_ttl) > check.within:
            return "flow_order", f"no {check.after} within {check.within:g}s before {check.step}"
        gap = now - (until - check.after_ttl)
        if gap < check.min_gap:
            return "flow_tempo", f"{check.step} {gap:.3f}s after {check.after} (human minimum {check.min_gap:g}s)"
        return None


def _client_refused(check: _StepCheck, signals: dict[str, Any]) -> str | None:
    if check.countries is not None:
        country = signals.get("country")
        if country not in check.countries:  # unknown (no database, unlisted address) fails closed
            return f"country {country or 'unknown'} not in {sorted(check.countries)}"
    listed = check.bad_lists.intersection(signals.get("reputation", ()))
    if listed:
        return f"on reputation list(s) {sorted(listed)}"
    return None


def build(policy: Any, route: RouteInfo, shared: FlowShared | None) -> FlowStage | None:
    if shared is None:
        return None
    steps = shared.steps.get(route.route_id)
    if not steps:
        return None
    return FlowStage([_StepCheck(flow, step, route, shared) for flow, step in steps], shared.state, shared.clock)
