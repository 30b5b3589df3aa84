"""A bounded decision cache with time-to-live and single flight.

Decisions of remote peers (OPA, ownership services) are reused for a short time; concurrent requests with the
same key share one call, so a burst of identical requests costs the peer one question. Errors are not cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from bastion.cache import BoundedCache

V = TypeVar("V")


class DecisionCache(Generic[V]):
    """At most `size` answers, each for `ttl` seconds of `clock` (0 or size 0: no caching, still single flight)."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._items: BoundedCache[Hashable, V] = BoundedCache(size if ttl > 0 else 0, ttl)
        self._flights: dict[Hashable, asyncio.Future[V]] = {}
        self.calls = 0  # how many times the peer was asked (tests and metrics)

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """(answer, whether it came from the cache). Exceptions of `fetch` propagate to every waiter."""
        hit = self._items.get(key, self._clock())
        if hit is not None:
            return hit, True
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight), True
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            self.calls += 1
            value = await fetch()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):  # the first caller went away; the others did not
                future.set_exception(ConnectionAbortedError("the shared call was cancelled"))
            else:
                future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._flights.pop(key, None)
        future.set_result(value)
        self._items.put(key, value, self._clock())
        return value, False
