"""The rate-limit stage: every limit and quota of a route, charged together in one call (after identity).

A limit or quota with `tiers:` applies only to callers whose consumer is in one of those tiers. The stage
builds one plan per tier named on the route (the untiered limits plus that tier's) when it is built, so a
request only looks its consumer's tier up in a dict and charges its plan's limits in the same single call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bastion.context import Continue, Decision, Deny, RequestContext
from bastion.stages.base import RouteInfo
from bastion.stages.traffic.concurrency import ConcurrencyGate
from bastion.stages.traffic.config import Quota, RateLimit
from bastion.stages.traffic.headers import policy_item, rate_limit_value, retry_after, sf_string
from bastion.stages.traffic.keys import KeyFunction, key_function
from bastion.stages.traffic.limiter import Limiter
from bastion.state import Hit, Kind, Outcome, StateUnavailable

_MONTH_SECONDS = 30 * 86400  # `w` advertised for a monthly quota (the window itself follows the calendar)


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    """One limit or quota, ready to build its hit for a request."""

    name: str
    header_name: str  # the name as a Structured Field String
    kind: Kind
    capacity: int
    period: float
    cost: int
    lease: int
    key: KeyFunction
    prefix: str  # storage key prefix; the key value is appended per request
    calendar: str | None  # "day" | "month" for quotas
    reason: str  # deny reason code
    policy_id: str
    describe: str  # for the operator's log line
    tiers: frozenset[str] = frozenset()  # empty: every caller


def compile_limit(limit: RateLimit, route: RouteInfo) -> CompiledLimit:
    kind: Kind = limit.algorithm
    short = "tb" if kind == "token_bucket" else "sw"
    params = f"{short}{limit.capacity}/{limit.period:g}"
    if kind == "token_bucket":
        describe = f"token_bucket {limit.capacity} burst at {limit.capacity / limit.period:g}/s, key {limit.key}"
    else:
        describe = f"sliding_window {limit.capacity} per {limit.period:g}s, key {limit.key}"
    return CompiledLimit(
        limit.name, sf_string(limit.name), kind, limit.capacity, limit.period, limit.cost, limit.lease,
        key_function(limit.key, route), f"rl:{limit.name}:{params}:", None, "rate_limited",
        route.policy_id("traffic.rate_limits"), describe + _tier_note(limit.tiers), frozenset(limit.tiers),
    )


def compile_quota(quota: Quota, route: RouteInfo) -> CompiledLimit:
    period = 86400.0 if quota.period == "day" else float(_MONTH_SECONDS)
    return CompiledLimit(
        quota.name, sf_string(quota.name), "fixed_window", quota.limit, period, quota.cost, 0,
        key_function(quota.key, route), f"q:{quota.name}:{quota.limit}/{quota.period}:", quota.period,
        "quota_exceeded", route.policy_id("traffic.quotas"),
        f"quota {quota.limit} per {quota.period} (UTC), key {quota.key}" + _tier_note(quota.tiers),
        frozenset(quota.tiers),
    )


def _tier_note(tiers: Sequence[str]) -> str:
    return f", tiers {'/'.join(tiers)}" if tiers else ""


@dataclass(frozen=True, slots=True)
class Plan:
    """The limits one caller is charged: the untiered limits, plus its tier's. Headers are precomputed."""

    limits: tuple[CompiledLimit, ...]
    leases: tuple[int, ...]
    names: tuple[str, ...]  # header names (sf-strings)
    policy_header: str

    @classmethod
    def of(cls, limits: Sequence[CompiledLimit]) -> Plan:
        return cls(tuple(limits), tuple(limit.lease for limit in limits),
                   tuple(limit.header_name for limit in limits),
                   ", ".join(policy_item(limit.name, limit.capacity, limit.period) for limit in limits))


class CalendarWindows:
    """The current UTC day or month as (start, length) in wall seconds, recomputed only when it ends."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, float]] = {}

    def window(self, period: str, now: float) -> tuple[float, float]:
        cached = self._cache.get(period)
        if cached is not None and cached[0] <= now < cached[0] + cached[1]:
            return cached
        if period == "day":
            start = math.floor(now / 86400) * 86400.0
            result = (start, 86400.0)
        else:
            day = datetime.fromtimestamp(now, UTC)
            first = datetime(day.year, day.month, 1, tzinfo=UTC)
            following = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
            result = (first.timestamp(), following.timestamp() - first.timestamp())
        self._cache[period] = result
        return result


class RateLimitStage:
    """Charges every limit of the route at once; 429 with `Retry-After` and RateLimit fields when one is out."""

    control = "traffic.rate_limits"
    needs_body = False

    def __init__(
        self,
        limits: Sequence[CompiledLimit],
        limiter: Limiter,
        *,
        clock: Callable[[], float],
        fail_open: bool,
        headers: str,
        policy_id: str,
        gate: ConcurrencyGate | None = None,
        gate_policy_id: str = "",
        consumer_tiers: Mapping[str, str] | None = None,
    ) -> None:
        self.limits = tuple(limits)
        self.limiter = limiter
        self.clock = clock
        self.fail_open = fail_open
        self.headers_on_allow = headers == "always"
        self.headers_on_deny = headers != "never"
        self.policy_id = policy_id
        self.gate = gate
        self.gate_policy_id = gate_policy_id
        self.base = Plan.of([limit for limit in self.limits if not limit.tiers])
        named = sorted({tier for limit in self.limits for tier in limit.tiers})
        self.tier_plans = {tier: Plan.of([limit for limit in self.limits if not limit.tiers or tier in limit.tiers])
                           for tier in named}
        self.consumer_tiers: Mapping[str, str] = consumer_tiers or {}  # shared by every route of one config
        self.calendar = CalendarWindows()
        self._allow = Continue(policy_id)

    def plan(self, ctx: RequestContext) -> Plan:
        """The caller's plan: by its consumer's tier (the consumer is verified by the identity stage)."""
        identity = ctx.identity
        if identity is None or identity.consumer is None or not self.tier_plans:
            return self.base
        tier = self.consumer_tiers.get(identity.consumer)
        return self.base if tier is None else self.tier_plans.get(tier, self.base)

    def hits(self, ctx: RequestContext, now: float, plan: Plan | None = None) -> list[Hit]:
        hits = []
        for limit in (plan or self.plan(ctx)).limits:
            if limit.calendar is None:
                anchor, period = 0.0, limit.period
            else:
                anchor, period = self.calendar.window(limit.calendar, now)
            hits.append(Hit(limit.prefix + limit.key(ctx), limit.kind, limit.capacity, period, limit.cost, 0,
                            anchor))
        return hits

    async def check(self, ctx: RequestContext) -> Decision:
        plan = self.plan(ctx)
        outcomes: list[Outcome] = []
        if plan.limits:  # empty for an untiered caller on a route whose limits all name tiers
            now = self.clock()
            hits = self.hits(ctx, now, plan)
            memory = self.limiter.memory
            try:
                if memory is not None:  # what `Limiter.hit` does for this backend, without its coroutines
                    outcomes = memory.hit_now(hits, now)
                else:
                    outcomes = await self.limiter.hit(hits, now, leases=plan.leases, fail_open=self.fail_open)
            except StateUnavailable as exc:
                return Deny(503, "ratelimit_unavailable", self.policy_id,
                            detail="Rate limiting is temporarily unavailable; retry shortly.",
                            headers=(("retry-after", "1"),), log_detail=str(exc))
            for index, outcome in enumerate(outcomes):
                if not outcome.allowed:
                    return self._deny(plan, hits, outcomes, index)
        if self.gate is not None:
            if not self.gate.try_acquire():
                return Deny(503, "concurrency_limit", self.gate_policy_id,
                            detail="The service is busy; retry shortly.", headers=(("retry-after", "1"),),
                            log_detail=f"{self.gate.in_flight} requests in flight "
                            f"(max_concurrent {self.gate.limit})")
            ctx.finalizers.append(self.gate.release)
        if self.headers_on_allow and plan.limits:
            ctx.response_headers.append(("ratelimit-policy", plan.policy_header))
            ctx.response_headers.append(("ratelimit", rate_limit_value(plan.names, outcomes)))
        return self._allow

    def _deny(self, plan: Plan, hits: list[Hit], outcomes: list[Outcome], first: int) -> Deny:
        refused = [i for i, o in enumerate(outcomes) if not o.allowed]
        wait = max(outcomes[i].retry_after for i in refused)
        limits = plan.limits
        limit = limits[first]
        headers: tuple[tuple[str, str], ...] = (("retry-after", retry_after(wait)),)
        if self.headers_on_deny:
            headers += (("ratelimit-policy", plan.policy_header),
                        ("ratelimit", rate_limit_value(plan.names, outcomes)))
        fired = "; ".join(
            f"{limits[i].name} ({limits[i].describe}) exhausted for "
            f"{hits[i].key[len(limits[i].prefix):]}" for i in refused
        )
        return Deny(429, limit.reason, limit.policy_id,
                    detail=f"Too many requests; retry after {retry_after(wait)} seconds.", headers=headers,
                    log_detail=f"{fired}; retry after {wait:.3f}s")
