"""The decision cache: TTL, size bound, errors not cached, single flight."""

from __future__ import annotations

import asyncio

import pytest

from bastion.stages.authz.cache import DecisionCache

from .conftest import Clock


async def test_ttl_size_and_errors() -> None:
    clock = Clock(0.0)
    cache: DecisionCache[int] = DecisionCache(ttl=10, size=2, clock=clock)

    async def value() -> int:
        return 1

    async def failing() -> int:
        raise OSError("down")

    assert await cache.get("a", value) == (1, False)
    assert await cache.get("a", value) == (1, True)
    await cache.get("b", value)
    await cache.get("c", value)  # evicts "b", used once; "a", used twice, is protected (bastion.cache)
    assert len(cache) == 2 and (await cache.get("a", value))[1] is True
    assert (await cache.get("b", value))[1] is False
    clock.now = 11
    assert (await cache.get("c", value))[1] is False
    for _ in range(2):
        with pytest.raises(OSError):
            await cache.get("x", failing)
    assert cache.calls == 7  # a, b, c, b, c and both failures: errors are asked again


async def test_ttl_zero_caches_nothing_but_still_shares_a_flight() -> None:
    cache: DecisionCache[int] = DecisionCache(ttl=0, size=100, clock=Clock())
    gate = asyncio.Event()

    async def slow() -> int:
        await gate.wait()
        return 5

    waiters = [asyncio.create_task(cache.get("k", slow)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert [v for v, _ in await asyncio.gather(*waiters)] == [5] * 5
    assert cache.calls == 1 and len(cache) == 0


async def test_a_cancelled_leader_does_not_cancel_the_followers() -> None:
    cache: DecisionCache[int] = DecisionCache(ttl=5, size=10, clock=Clock())

    async def never() -> int:
        await asyncio.sleep(10)
        return 1

    leader = asyncio.create_task(cache.get("k", never))
    await asyncio.sleep(0)
    follower = asyncio.create_task(cache.get("k", never))
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(ConnectionAbortedError):
        await follower
