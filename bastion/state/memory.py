"""In-memory state: one process, no I/O. Atomic because `hit` never awaits between reading and writing."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from bastion.cache import BoundedCache
from bastion.state import Hit, Outcome
from bastion.state.algorithms import ALGORITHMS, State


class MemoryState:
    """Limits in a `BoundedCache` (at most `max_keys`; a key counted once leaves first when full, a key in steady
    use stays), blocks in a dict bounded by the block list's `max_blocks`. Expired blocks are swept at most every
    `sweep_interval` seconds, expired limits as new keys arrive."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.time, sweep_interval: float = 10.0,
                 max_keys: int = 200_000) -> None:
        self._clock = clock
        self._limits: BoundedCache[str, State] = BoundedCache(max_keys)
        self._blocks: dict[tuple[str, str], float] = {}
        self._sweep_interval = sweep_interval
        self._next_sweep = 0.0

    async def hit(self, hits: Sequence[Hit], now: float) -> list[Outcome]:
        return self.hit_now(hits, now)

    def hit_now(self, hits: Sequence[Hit], now: float) -> list[Outcome]:
        """The synchronous core of `hit`, for callers that cannot await (local fallback, benchmarks)."""
        if now >= self._next_sweep:
            self._sweep(now)
        limits = self._limits
        if len(hits) == 1:  # one limit on the route, the common case: no lists of writes
            hit = hits[0]
            outcome, new_state, ttl = ALGORITHMS[hit.kind](hit, limits.get(hit.key, now), now)
            if outcome.allowed:
                limits.put(hit.key, new_state, now, now + ttl)
                return [outcome]
            return [outcome.ungranted() if outcome.granted else outcome]
        outcomes: list[Outcome] = []
        writes: list[tuple[str, State, float]] = []
        admitted = True
        for hit in hits:
            state = limits.get(hit.key, now)
            outcome, new_state, ttl = ALGORITHMS[hit.kind](hit, state, now)
            outcomes.append(outcome)
            writes.append((hit.key, new_state, now + ttl))
            admitted = admitted and outcome.allowed
        if admitted:  # all or nothing: a refused request charges no limit
            for key, new_state, expires in writes:
                limits.put(key, new_state, now, expires)
            return outcomes
        return [o.ungranted() if o.granted else o for o in outcomes]  # nothing was taken

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self._sweep_interval
        for bkey in [k for k, until in self._blocks.items() if until <= now]:
            del self._blocks[bkey]

    async def block(self, kind: str, key: str, until: float) -> None:
        self._blocks[(kind, key)] = until

    async def unblock(self, kind: str, key: str) -> None:
        self._blocks.pop((kind, key), None)

    async def is_blocked(self, kind: str, key: str, now: float | None = None) -> float | None:
        until = self._blocks.get((kind, key))
        if until is None:
            return None
        return until if until > (self._clock() if now is None else now) else None

    async def list_blocks(self) -> list[tuple[str, str, float]]:
        """Every block in force: `(kind, key, until)` (the admin API's listing across workers)."""
        now = self._clock()
        return [(kind, key, until) for (kind, key), until in self._blocks.items() if until > now]

    async def close(self) -> None:
        self._limits.clear()
        self._blocks.clear()
