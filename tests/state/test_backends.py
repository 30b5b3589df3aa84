"""One table of limit conversations, run against the memory backend and a real Redis: same answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.state import Hit, StateBackend, open_state
from bastion.state.memory import MemoryState
from bastion.state.redis_state import RedisState
from tests.state.test_supervised import supervised_state


@pytest.fixture(params=["memory", "redis", "supervised", "cluster"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateBackend]:
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        state: StateBackend = open_state(cluster.url)
        yield state
        await state.close()
        return
    if request.param == "memory":
        state = MemoryState()
    elif request.param == "supervised":  # a worker's view of its supervisor's memory, over a real socket
        async with supervised_state(tmp_path) as (supervised, _):
            yield supervised
        return
    else:
        state = open_state(request.getfixturevalue("redis_server").url)
        assert isinstance(state, RedisState)
    yield state
    await state.close()


TB = Hit("tb", "token_bucket", limit=5, period=5)  # 1 token/s, burst 5
TB3 = Hit("tb3", "token_bucket", limit=5, period=5, cost=3)
SW = Hit("sw", "sliding_window", limit=10, period=10)
FW = Hit("fw", "fixed_window", limit=3, period=86400, anchor=0)
FW_NEXT = Hit("fw", "fixed_window", limit=3, period=86400, anchor=86400)

# (now, hit, allowed, remaining, retry_after)
CONVERSATIONS = {
    "token bucket burst then refill": [
        *[(0.0, TB, True, 4 - i, 0.0) for i in range(5)],
        (0.0, TB, False, 0, 1.0),
        (0.5, TB, False, 0, 0.5),
        (1.0, TB, True, 0, 0.0),
        (1.0, TB, False, 0, 1.0),
        (100.0, TB, True, 4, 0.0),  # refilled, never above the burst
    ],
    "token bucket cost 3": [
        (0.0, TB3, True, 2, 0.0),
        (0.0, TB3, False, 2, 1.0),
        (1.0, TB3, True, 0, 0.0),
    ],
    "sliding window: no double quota at the edge": [
        *[(9.5, SW, True, 9 - i, 0.0) for i in range(10)],
        (9.9, SW, False, 0, 1.1),  # wait for the window to end and 10% of the next
        (10.0, SW, False, 0, 1.0),  # next window: the previous one still weighs fully
        (11.0, SW, True, 0, 0.0),  # previous weighs 0.9 -> one unit free
        (11.0, SW, False, 0, 1.0),
        (15.0, SW, True, 3, 0.0),  # 10*0.5 + 1 = 6 used -> 4 left before this one
    ],
    "sliding window refused until the next window": [
        *[(0.0, SW, True, 9 - i, 0.0) for i in range(10)],
        (2.0, SW, False, 0, 9.0),  # current window full, previous empty: wait until 10 + 10*(1-9/10)
        (11.0, SW, True, 0, 0.0),
    ],
    "fixed window quota per day": [
        (10.0, FW, True, 2, 0.0),
        (20.0, FW, True, 1, 0.0),
        (30.0, FW, True, 0, 0.0),
        (86000.0, FW, False, 0, 400.0),
        (86400.0, FW_NEXT, True, 2, 0.0),
    ],
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
async def test_conversation(backend: StateBackend, name: str) -> None:
    for step, (now, hit, allowed, remaining, retry) in enumerate(CONVERSATIONS[name]):
        [outcome] = await backend.hit([hit], now)
        got = (outcome.allowed, outcome.remaining, outcome.retry_after)
        assert got == (allowed, remaining, pytest.approx(retry, abs=1e-6)), f"step {step} at t={now}"
        assert outcome.granted == (hit.cost if allowed else 0)


async def test_several_limits_all_or_nothing(backend: StateBackend) -> None:
    wide = Hit("wide", "sliding_window", limit=2, period=60)
    narrow = Hit("narrow", "token_bucket", limit=1, period=60)
    first = await backend.hit([wide, narrow], 0.0)
    assert [o.allowed for o in first] == [True, True]
    second = await backend.hit([wide, narrow], 0.0)
    assert [o.allowed for o in second] == [True, False]
    assert [o.granted for o in second] == [0, 0]  # the refused request charged neither limit
    [alone] = await backend.hit([wide], 0.0)
    assert alone.allowed and alone.remaining == 0  # `wide` was charged once before, not twice


async def test_reset_values(backend: StateBackend) -> None:
    [tb] = await backend.hit([Hit("r-tb", "token_bucket", limit=10, period=10, cost=4)], 0.0)
    assert tb.reset == pytest.approx(4.0)  # 4 tokens at 1/s to be full again
    [sw] = await backend.hit([Hit("r-sw", "sliding_window", limit=10, period=60)], 45.0)
    assert sw.reset == pytest.approx(15.0)  # until the current window ends


@pytest.mark.parametrize(("kind", "available", "grants"), [
    ("sliding_window", 10, [4, 4, 2]),
    ("token_bucket", 10, [4, 4, 2]),
    ("fixed_window", 10, [4, 4, 2]),
])
async def test_lease_takes_up_to_what_is_left(backend: StateBackend, kind: str, available: int,
                                              grants: list[int]) -> None:
    hit = Hit(f"lease-{kind}", kind, limit=available, period=1000, take=4)  # type: ignore[arg-type]
    for expected in grants:
        [outcome] = await backend.hit([hit], 1.0)
        assert (outcome.allowed, outcome.granted) == (True, expected)
    [outcome] = await backend.hit([hit], 1.0)
    assert not outcome.allowed and outcome.granted == 0


async def test_blocks(backend: StateBackend) -> None:
    import time

    now = time.time()
    assert await backend.is_blocked("ip", "203.0.113.9") is None
    await backend.block("ip", "203.0.113.9", now + 60)
    assert await backend.is_blocked("ip", "203.0.113.9") == pytest.approx(now + 60)
    assert await backend.is_blocked("ip", "203.0.113.9", now=now + 61) is None
    assert await backend.is_blocked("revoked", "203.0.113.9") is None  # kinds are separate
    await backend.unblock("ip", "203.0.113.9")
    assert await backend.is_blocked("ip", "203.0.113.9") is None
    await backend.block("jti", "abc", now - 1)  # already over: nothing stored
    assert await backend.is_blocked("jti", "abc") is None


def test_open_state_urls() -> None:
    assert isinstance(open_state("memory"), MemoryState)
    assert isinstance(open_state("redis://127.0.0.1:6379/0"), RedisState)
    assert isinstance(open_state("redis+sentinel://127.0.0.1:26379/mymaster/0"), RedisState)
    with pytest.raises(ValueError, match="unknown state backend"):
        open_state("etcd://x")
