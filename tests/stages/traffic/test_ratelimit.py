"""The rate-limit stage: both algorithms on every key dimension, several limits, quotas and the headers,
on the memory backend and on a real Redis, with an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bastion.context import Continue, Deny
from bastion.stages.base import RouteInfo
from bastion.stages.traffic import TrafficShared, build_rate_limits
from bastion.stages.traffic.headers import rate_limit_value
from bastion.stages.traffic.limiter import Limiter
from bastion.stages.traffic.ratelimit import RateLimitStage
from bastion.state import Outcome, StateBackend, open_state
from bastion.state.memory import MemoryState
from tests.stages.traffic.support import BILLING, INTERNAL, ORDERS, ORDERS_LIST, Clock, policy, request


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[StateBackend]:
    backend = MemoryState() if request.param == "memory" else open_state(
        request.getfixturevalue("redis_server").url)
    yield backend
    await backend.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def stage_for(state: StateBackend, clock: Clock, route: RouteInfo = ORDERS, **traffic: Any) -> RateLimitStage:
    shared = TrafficShared(Limiter(state), clock)
    built = build_rate_limits(policy(**traffic), route, shared)
    assert isinstance(built, RateLimitStage)
    return built


ALGORITHMS = {
    "sliding_window": {"algorithm": "sliding_window", "limit": 1, "window": "1m"},
    "token_bucket": {"algorithm": "token_bucket", "rate": 1 / 60, "burst": 1},
}

# dimension -> (first request, same key, different key) as (request kwargs, route)
DIMENSIONS: dict[str, tuple[tuple[dict[str, Any], RouteInfo], ...]] = {
    "consumer": (({"consumer": "acme"}, ORDERS), ({"consumer": "acme", "ip": "192.0.2.9"}, BILLING),
                 ({"consumer": "globex"}, ORDERS)),
    "credential": (({"consumer": "acme", "credential": "key-1"}, ORDERS),
                   ({"consumer": "other", "credential": "key-1"}, ORDERS),
                   ({"consumer": "acme", "credential": "key-2"}, ORDERS)),
    "client_ip": (({"ip": "198.51.100.7"}, ORDERS), ({"ip": "198.51.100.7", "consumer": "x"}, BILLING),
                  ({"ip": "2001:db8::7"}, ORDERS)),
    "route": (({"consumer": "a"}, ORDERS), ({"consumer": "b"}, ORDERS), ({"consumer": "a"}, ORDERS_LIST)),
    "api": (({"consumer": "a"}, ORDERS), ({"consumer": "b"}, ORDERS_LIST), ({"consumer": "a"}, BILLING)),
    "class": (({"consumer": "a"}, ORDERS), ({"consumer": "b"}, BILLING), ({"consumer": "a"}, INTERNAL)),
    "claim:org.id": (({"claims": {"org": {"id": "o-1"}}}, ORDERS), ({"claims": {"org": {"id": "o-1"}}}, ORDERS),
                     ({"claims": {"org": {"id": "o-2"}}}, ORDERS)),
    "header:x-tenant": (({"headers": [("x-tenant", "t1")]}, ORDERS), ({"headers": [("x-tenant", "t1")]}, ORDERS),
                        ({"headers": [("x-tenant", "t2")]}, ORDERS)),
    "consumer+route": (({"consumer": "acme"}, ORDERS), ({"consumer": "acme"}, ORDERS),
                       ({"consumer": "acme"}, ORDERS_LIST)),
}


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
@pytest.mark.parametrize("dimension", list(DIMENSIONS))
async def test_each_dimension_counts_its_own_key(state: StateBackend, clock: Clock, algorithm: str,
                                                 dimension: str) -> None:
    limit = {"name": "one", "key": dimension, **ALGORITHMS[algorithm]}
    stages: dict[str, RateLimitStage] = {}
    shared = TrafficShared(Limiter(state), clock)

    def stage(route: RouteInfo) -> RateLimitStage:
        if route.route_id not in stages:
            built = build_rate_limits(policy(rate_limits=[limit]), route, shared)
            assert isinstance(built, RateLimitStage)
            stages[route.route_id] = built
        return stages[route.route_id]

    (first, r1), (same, r2), (other, r3) = DIMENSIONS[dimension]
    assert isinstance(await stage(r1).check(request(**first)), Continue)
    refused = await stage(r2).check(request(**same))
    assert isinstance(refused, Deny) and refused.reason == "rate_limited", "same key must share the counter"
    assert isinstance(await stage(r3).check(request(**other)), Continue), "another key has its own counter"
    clock.now += 120  # the previous window no longer weighs (sliding) / refilled (bucket)
    assert isinstance(await stage(r1).check(request(**first)), Continue)


@pytest.mark.parametrize("dimension", ["consumer", "credential", "claim:org", "header:x-tenant"])
async def test_without_identity_falls_back_to_client_ip(state: StateBackend, clock: Clock,
                                                        dimension: str) -> None:
    stage = stage_for(state, clock, rate_limits=[{"name": "n", "limit": 1, "window": "1m", "key": dimension}])
    assert isinstance(await stage.check(request(ip="192.0.2.1")), Continue)
    assert isinstance(await stage.check(request(ip="192.0.2.1")), Deny)
    assert isinstance(await stage.check(request(ip="192.0.2.2")), Continue)


async def test_sliding_window_over_time(state: StateBackend, clock: Clock) -> None:
    clock.now = 600.0  # the start of a window
    stage = stage_for(state, clock, rate_limits=[{"name": "sw", "limit": 10, "window": "10s", "key": "consumer"}])
    ctx = {"consumer": "acme"}
    clock.now = 609.0
    results = [isinstance(await stage.check(request(**ctx)), Continue) for _ in range(11)]
    assert results == [True] * 10 + [False]
    clock.now = 610.5  # just past the edge: the previous window still weighs 95%: no double quota
    assert isinstance(await stage.check(request(**ctx)), Deny)
    clock.now = 611.0  # 90% -> one unit free
    assert isinstance(await stage.check(request(**ctx)), Continue)
    assert isinstance(await stage.check(request(**ctx)), Deny)


async def test_token_bucket_rate_and_burst(state: StateBackend, clock: Clock) -> None:
    stage = stage_for(state, clock, rate_limits=[
        {"name": "tb", "algorithm": "token_bucket", "rate": 2, "burst": 4, "key": "client_ip"}])
    results = [isinstance(await stage.check(request()), Continue) for _ in range(5)]
    assert results == [True] * 4 + [False]
    clock.now += 0.5  # one token at 2/s
    assert isinstance(await stage.check(request()), Continue)
    assert isinstance(await stage.check(request()), Deny)


async def test_cost(state: StateBackend, clock: Clock) -> None:
    stage = stage_for(state, clock, rate_limits=[{"name": "c", "limit": 10, "window": "1m", "cost": 4}])
    results = [isinstance(await stage.check(request(consumer="a")), Continue) for _ in range(3)]
    assert results == [True, True, False]


async def test_several_limits_the_first_exhausted_fires_and_others_are_not_charged(
        state: StateBackend, clock: Clock) -> None:
    stage = stage_for(state, clock, rate_limits=[
        {"name": "per-consumer", "limit": 3, "window": "1m", "key": "consumer"},
        {"name": "per-route", "limit": 2, "window": "1m", "key": "route"},
    ])
    assert isinstance(await stage.check(request(consumer="a")), Continue)
    assert isinstance(await stage.check(request(consumer="b")), Continue)
    denied = await stage.check(request(consumer="a"))  # the route's limit is out, the consumer's is not
    assert isinstance(denied, Deny) and denied.status == 429 and denied.reason == "rate_limited"
    assert denied.log_detail is not None and denied.log_detail.startswith("per-route (")
    assert "per-consumer" not in denied.log_detail
    assert denied.policy_id == "class:partner/orders/get-order/traffic.rate_limits"
    other = stage_for(state, clock, route=BILLING, rate_limits=[
        {"name": "per-consumer", "limit": 3, "window": "1m", "key": "consumer"}])
    # consumer a used 1 (the refused request charged nothing), so 2 are left across routes
    results = [isinstance(await other.check(request(consumer="a")), Continue) for _ in range(3)]
    assert results == [True, True, False]


async def test_headers_on_allow_and_on_429(state: StateBackend, clock: Clock) -> None:
    clock.now = 1200.0
    stage = stage_for(state, clock, rate_limits=[
        {"name": "per-consumer", "limit": 2, "window": "1m", "key": "consumer"},
        {"name": "burst", "algorithm": "token_bucket", "rate": 1, "burst": 5, "key": "consumer"},
    ])
    clock.now = 1215.0
    ctx = request(consumer="acme")
    assert isinstance(await stage.check(ctx), Continue)
    assert ctx.response_headers == [
        ("ratelimit-policy", '"per-consumer";q=2;w=60, "burst";q=5;w=5'),
        ("ratelimit", '"per-consumer";r=1;t=45, "burst";r=4;t=1'),
    ]
    await stage.check(request(consumer="acme"))
    denied = await stage.check(request(consumer="acme"))
    assert isinstance(denied, Deny)
    headers = dict(denied.headers)
    # 45 s until this window ends, then 30 s until the 2 used here weigh 1 or less
    assert headers["retry-after"] == "75"
    assert headers["ratelimit-policy"] == '"per-consumer";q=2;w=60, "burst";q=5;w=5'
    assert headers["ratelimit"].startswith('"per-consumer";r=0;t=75, "burst";r=')
    assert denied.detail == "Too many requests; retry after 75 seconds."


@pytest.mark.parametrize(("mode", "on_allow", "on_deny"), [
    ("always", True, True), ("on_deny", False, True), ("never", False, False)])
async def test_header_modes(state: StateBackend, clock: Clock, mode: str, on_allow: bool, on_deny: bool) -> None:
    stage = stage_for(state, clock, rate_limit_headers=mode,
                      rate_limits=[{"name": "n", "limit": 1, "window": "1m", "key": "client_ip"}])
    ctx = request()
    await stage.check(ctx)
    assert bool(ctx.response_headers) is on_allow
    denied = await stage.check(request())
    assert isinstance(denied, Deny)
    names = [name for name, _ in denied.headers]
    assert "retry-after" in names
    assert ("ratelimit" in names) is on_deny


async def test_daily_quota_resets_at_utc_midnight(state: StateBackend, clock: Clock) -> None:
    clock.now = datetime(2026, 3, 10, 23, 0, tzinfo=UTC).timestamp()
    stage = stage_for(state, clock, quotas=[{"name": "plan", "limit": 2, "period": "day"}])
    assert isinstance(await stage.check(request(consumer="acme")), Continue)
    assert isinstance(await stage.check(request(consumer="acme")), Continue)
    denied = await stage.check(request(consumer="acme"))
    assert isinstance(denied, Deny) and denied.reason == "quota_exceeded"
    assert denied.policy_id.endswith("/traffic.quotas")
    assert dict(denied.headers)["retry-after"] == "3600"
    assert isinstance(await stage.check(request(consumer="globex")), Continue)
    clock.now = datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC).timestamp()
    assert isinstance(await stage.check(request(consumer="acme")), Continue)


async def test_monthly_quota_follows_the_calendar(state: StateBackend, clock: Clock) -> None:
    clock.now = datetime(2026, 2, 27, tzinfo=UTC).timestamp()
    stage = stage_for(state, clock, quotas=[{"name": "plan", "limit": 1, "period": "month"}])
    assert isinstance(await stage.check(request(consumer="acme")), Continue)
    denied = await stage.check(request(consumer="acme"))
    assert isinstance(denied, Deny)
    assert dict(denied.headers)["retry-after"] == str(2 * 86400)  # until March 1st
    clock.now = datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    assert isinstance(await stage.check(request(consumer="acme")), Continue)


async def test_quota_and_limit_together(state: StateBackend, clock: Clock) -> None:
    stage = stage_for(state, clock, rate_limits=[{"name": "rl", "limit": 5, "window": "1s"}],
                      quotas=[{"name": "plan", "limit": 3, "period": "day"}])
    for _ in range(3):
        assert isinstance(await stage.check(request(consumer="acme")), Continue)
        clock.now += 1
    denied = await stage.check(request(consumer="acme"))
    assert isinstance(denied, Deny) and denied.reason == "quota_exceeded"
    assert denied.log_detail is not None and "plan (quota 3 per day (UTC), key consumer)" in denied.log_detail


TIERED = {
    "rate_limits": [
        {"name": "per-consumer", "limit": 5, "window": "1m", "key": "consumer"},
        {"name": "free-burst", "algorithm": "token_bucket", "rate": 1, "burst": 2, "key": "consumer",
         "tiers": ["free", "trial"]},
    ],
    "quotas": [{"name": "gold-day", "limit": 3, "period": "day", "tiers": ["gold"]}],
}
TIERS = {"acme": "gold", "tiny": "free", "newco": "trial", "plain": "unknown-tier"}


def tiered_stage(state: StateBackend, clock: Clock, **traffic: Any) -> RateLimitStage:
    built = build_rate_limits(policy(**(traffic or TIERED)), ORDERS, TrafficShared(Limiter(state), clock, TIERS))
    assert isinstance(built, RateLimitStage)
    return built


async def admitted(stage: RateLimitStage, count: int, **ctx: Any) -> list[bool]:
    return [isinstance(await stage.check(request(**ctx)), Continue) for _ in range(count)]


@pytest.mark.parametrize(("consumer", "expected"), [
    ("tiny", [True] * 2 + [False]),  # free: the tier's burst of 2 fires first
    ("newco", [True] * 2 + [False]),  # trial shares the free limit (its own counter, keyed by consumer)
    ("acme", [True] * 3 + [False]),  # gold: its daily quota of 3
    ("plain", [True] * 5 + [False]),  # a tier no limit names: the untiered limit only
    (None, [True] * 5 + [False]),  # anonymous: the untiered limit only, per client IP
])
async def test_tier_limits_add_to_the_untiered_ones(state: StateBackend, clock: Clock, consumer: str | None,
                                                    expected: list[bool]) -> None:
    stage = tiered_stage(state, clock)
    assert await admitted(stage, len(expected), consumer=consumer) == expected


async def test_tier_and_class_limits_are_charged_together(state: StateBackend, clock: Clock) -> None:
    clock.now = 3600.0
    stage = tiered_stage(state, clock)
    assert await admitted(stage, 2, consumer="tiny") == [True, True]
    denied = await stage.check(request(consumer="tiny"))  # the tier's burst fires: nothing is charged
    assert isinstance(denied, Deny) and denied.reason == "rate_limited"
    assert denied.log_detail is not None and denied.log_detail.startswith(
        "free-burst (token_bucket 2 burst at 1/s, key consumer, tiers free/trial) exhausted for c=tiny")
    assert "per-consumer" not in denied.log_detail
    headers = dict(denied.headers)
    assert headers["ratelimit-policy"] == '"per-consumer";q=5;w=60, "free-burst";q=2;w=2'
    assert headers["ratelimit"].startswith('"per-consumer";r=')
    assert '"free-burst";r=0;t=' in headers["ratelimit"]
    clock.now += 2  # the bucket is full again; the refused request took nothing from the untiered limit
    assert await admitted(stage, 2, consumer="tiny") == [True, True]
    clock.now += 2
    assert await admitted(stage, 1, consumer="tiny") == [True]  # the 5th of the minute
    denied = await stage.check(request(consumer="tiny"))
    assert isinstance(denied, Deny) and denied.log_detail is not None
    assert denied.log_detail.startswith("per-consumer (")


async def test_tier_headers_name_the_callers_own_limits(state: StateBackend, clock: Clock) -> None:
    stage = tiered_stage(state, clock)
    gold, anonymous = request(consumer="acme"), request()
    assert isinstance(await stage.check(gold), Continue)
    assert isinstance(await stage.check(anonymous), Continue)
    assert dict(gold.response_headers)["ratelimit-policy"] == '"per-consumer";q=5;w=60, "gold-day";q=3;w=86400'
    assert dict(anonymous.response_headers)["ratelimit-policy"] == '"per-consumer";q=5;w=60'


async def test_only_tier_limits_leave_other_callers_unlimited(state: StateBackend, clock: Clock) -> None:
    stage = tiered_stage(state, clock, rate_limits=[
        {"name": "free", "limit": 1, "window": "1m", "key": "consumer", "tiers": ["free"]}])
    assert await admitted(stage, 2, consumer="tiny") == [True, False]
    other = request(consumer="acme")
    assert isinstance(await stage.check(other), Continue)
    assert other.response_headers == []  # no limit applied: nothing to advertise
    assert await admitted(stage, 3, consumer="acme") == [True] * 3


async def test_tier_quota_resets_with_the_day(state: StateBackend, clock: Clock) -> None:
    clock.now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()
    stage = tiered_stage(state, clock)
    for _ in range(3):
        assert isinstance(await stage.check(request(consumer="acme")), Continue)
        clock.now += 60
    denied = await stage.check(request(consumer="acme"))
    assert isinstance(denied, Deny) and denied.reason == "quota_exceeded"
    assert denied.policy_id.endswith("/traffic.quotas")
    clock.now = datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC).timestamp()
    assert isinstance(await stage.check(request(consumer="acme")), Continue)


@pytest.mark.parametrize(("names", "outcomes", "value"), [
    (['"a"'], [Outcome(True, 7, 0.2, 0.0)], '"a";r=7;t=1'),
    (['"a"'], [Outcome(False, -1, 3.0, 3.0)], '"a";r=0;t=3'),
    (['"a"', '"b"'], [Outcome(True, 7, 0.2, 0.0), Outcome(True, 0, 59.5, 0.0)], '"a";r=7;t=1, "b";r=0;t=60'),
])
def test_ratelimit_field_has_one_item_per_limit(names, outcomes, value):
    assert rate_limit_value(names, outcomes) == value
