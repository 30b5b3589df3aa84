"""The limiter against a real Redis that stops and restarts mid-test: fail closed, fall back locally with an
alert, recover by itself; and local leases with their bounded over-admission."""

from __future__ import annotations

import asyncio
from typing import Any

from bastion.context import Continue, Deny
from bastion.stages.base import Services
from bastion.stages.traffic import TrafficShared, build_rate_limits, prepare
from bastion.stages.traffic.limiter import Limiter
from bastion.stages.traffic.ratelimit import RateLimitStage
from bastion.state import Hit, Outcome
from bastion.state.memory import MemoryState
from bastion.state.redis_state import RedisState
from tests.stages.traffic.support import ORDERS, Clock, policy, request
from tests.state.redis_server import RedisServer


def stage_on(limiter: Limiter, clock: Clock, **traffic: Any) -> RateLimitStage:
    built = build_rate_limits(policy(**traffic), ORDERS, TrafficShared(limiter, clock))
    assert isinstance(built, RateLimitStage)
    return built


LIMIT = {"name": "n", "limit": 3, "window": "1h", "key": "consumer"}


async def test_fail_closed_while_redis_is_down_then_recover(redis_server: RedisServer) -> None:
    state = RedisState(redis_server.url, timeout=0.2, retry_interval=0.1)
    clock = Clock()
    stage = stage_on(Limiter(state), clock, rate_limits=[LIMIT], on_state_error="closed")
    assert isinstance(await stage.check(request(consumer="a")), Continue)
    redis_server.stop()
    for _ in range(3):
        denied = await stage.check(request(consumer="a"))
        assert isinstance(denied, Deny) and (denied.status, denied.reason) == (503, "ratelimit_unavailable")
        assert dict(denied.headers)["retry-after"] == "1"
        assert "redis unavailable" in (denied.log_detail or "")
    redis_server.start()  # a fresh, empty Redis on the same port
    await asyncio.sleep(0.15)
    results = [isinstance(await stage.check(request(consumer="a")), Continue) for _ in range(4)]
    assert results == [True, True, True, False]
    await state.close()


async def test_open_local_falls_back_with_one_alert_and_recovers(redis_server: RedisServer) -> None:
    alerts: list[tuple[str, dict[str, Any]]] = []
    state = RedisState(redis_server.url, timeout=0.2, retry_interval=0.1)
    clock = Clock()
    limiter = Limiter(state, alert=lambda event, detail: alerts.append((event, detail)))
    stage = stage_on(limiter, clock, rate_limits=[LIMIT], on_state_error="open_local")
    assert isinstance(await stage.check(request(consumer="a")), Continue)
    redis_server.stop()
    # the local limiter counts on its own in this process: 3 more, then 429
    results = [isinstance(await stage.check(request(consumer="a")), Continue) for _ in range(4)]
    assert results == [True, True, True, False]
    assert limiter.degraded
    assert [event for event, _ in alerts] == ["state.unavailable"]  # once per outage, not per request
    assert alerts[0][1]["fallback"] == "local"
    redis_server.start()
    await asyncio.sleep(0.15)
    assert isinstance(await stage.check(request(consumer="a")), Continue)  # back on Redis (empty again)
    assert [event for event, _ in alerts] == ["state.unavailable", "state.recovered"]
    assert not limiter.degraded
    await state.close()


async def test_leases_cut_round_trips_with_bounded_over_admission(redis_server: RedisServer) -> None:
    clock = Clock()
    states = [RedisState(redis_server.url), RedisState(redis_server.url)]
    limiters = [Limiter(s, lease_ttl=5.0, monotonic=lambda: 0.0) for s in states]
    lease = 10
    stages = [stage_on(lim, clock, rate_limits=[{**LIMIT, "limit": 100, "lease": lease}]) for lim in limiters]
    calls = 0
    for s in states:
        original = s.hit

        async def counted(hits: Any, now: float, _original: Any = original) -> Any:
            nonlocal calls
            calls += 1
            return await _original(hits, now)
        s.hit = counted  # type: ignore[method-assign]
    admitted = 0
    for i in range(300):
        admitted += isinstance(await stages[i % 2].check(request(consumer="a")), Continue)
    assert admitted == 100  # every leased unit was charged in Redis: never more than the limit here
    assert calls <= 100 // lease + 2 + 300 - 100  # ~one round trip per 10 admitted (refusals still ask)
    for s in states:
        await s.close()


async def test_lease_is_not_used_on_the_memory_backend() -> None:
    limiter = Limiter(MemoryState())
    [outcome] = await limiter.hit([Hit("k", "sliding_window", 10, 60)], 0.0, leases=[5])
    assert outcome.granted == 1


def test_prepare_opens_the_configured_state_once() -> None:
    class Gateway:
        state = "redis://127.0.0.1:1/0"

    class Config:
        gateway = Gateway()

    services = Services()
    shared = prepare(Config(), services)
    assert isinstance(services.state, RedisState) and shared.limiter.state is services.state
    again = prepare(Config(), services)  # a reload keeps the process's backend
    assert again.limiter.state is services.state


class _Granting:
    """A shared backend that grants every lease asked for, and counts its round trips."""

    name = "fake-shared"

    def __init__(self) -> None:
        self.round_trips = 0

    async def hit(self, hits: Any, now: float) -> list[Outcome]:
        self.round_trips += 1
        return [Outcome(True, 100, 60.0, 0.0, max(h.take, h.cost)) for h in hits]


async def test_one_lease_over_max_leases_evicts_one_and_loses_its_units() -> None:
    state = _Granting()
    limiter = Limiter(state, max_leases=2, monotonic=lambda: 0.0)  # type: ignore[arg-type]

    async def take(key: str) -> None:
        await limiter.hit([Hit(key, "sliding_window", 100, 60)], 0.0, leases=[5])

    await take("a")
    await take("b")  # two leases of 4 units: at the cap
    assert state.round_trips == 2
    await take("a")
    await take("b")
    assert state.round_trips == 2  # both spent from their leases
    await take("c")  # one over: the least recently used lease ("a") goes, the table stays at 2
    assert len(limiter._leases) == 2 and limiter._leases.evictions == 1
    await take("b")
    assert state.round_trips == 3  # "b" still leased
    await take("a")
    assert state.round_trips == 4  # "a"'s units were lost: charged again centrally (never admitted for free)
