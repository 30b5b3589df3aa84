"""The windows of the enumeration and usage-anomaly detections, shared across workers and nodes.

Both live in the state backend (Redis, or the supervisor of `serve --workers N`) once the detector is shared, so
N processes fire at the configured threshold, not N times it:

- enumeration (distinct object ids refused per caller) is rare traffic (403/404 answers): one call per event,
  two hits in one slot (`{det:enumeration:<kind>:<key>}` hash tag): a token bucket of one per object id says
  whether the id is new within the window, a sliding window counts the new ids (`distinct_hits`);
- usage anomaly watches every request, so it is not one call per request: each process adds its requests per
  caller locally and `RateSync` sends the increments every `interval` seconds in one call (a fixed window per
  caller, aligned on the detection's window), getting back the callers' counts over every process. The
  detector's baseline then reads those counts: the error is the other processes' requests of the last interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

from bastion.state import Hit, Outcome, StateUnavailable

SYNC_INTERVAL = 0.2  # seconds between two sends of the request counts
SYNC_BATCH = 256  # callers per call
MAX_CALLERS = 10_000  # callers counted between two sends; more (a flood of new callers) stay local
_UNBOUNDED = float(2**40)  # a counter, not a limit: never refused


def tag(detection: str, key: tuple[str, Any]) -> str:
    """The keys of one detection and caller share this Redis Cluster hash tag (one slot: one Lua call)."""
    return f"{{det:{detection}:{key[0]}:{key[1]}}}"


def distinct_hits(key: tuple[str, Any], value: str, threshold: int, window: float) -> list[Hit]:
    """[is `value` new for `key` within `window`, count of new values]: both allowed while below the
    threshold; the first refused (allowed: False) for a repeat; the second refused at the threshold-th value."""
    name = tag("enumeration", key)
    return [Hit(f"{name}:seen:{value}", "token_bucket", limit=1, period=window),
            Hit(name, "sliding_window", limit=threshold - 1, period=window)]


def fired_gate(detection: str, key: tuple[str, Any], window: float) -> Hit:
    """One process fires per key and window: the first to take this single token."""
    return Hit(f"{tag(detection, key)}:fired", "token_bucket", limit=1, period=window)


class RateSync:
    """Requests per caller, summed over processes in the state backend every `interval` seconds.

    `add(key, now)` counts one request (synchronous); the task started on demand sends the counts and calls
    `on_count(key, window_index, total)` with every process's total of that caller's current window. It stops
    by itself when no request came for a while, and starts again with the next one.
    """

    def __init__(self, state: Any, window: float, on_count: Callable[[Any, int, float], None],
                 interval: float = SYNC_INTERVAL, max_callers: int = MAX_CALLERS) -> None:
        self.state = state
        self.window = window
        self.on_count = on_count
        self.interval = interval
        self.max_callers = max_callers
        self._pending: dict[tuple[Any, int], int] = {}  # (caller, window index) -> requests not sent yet
        self._task: asyncio.Task[None] | None = None
        self._now = 0.0  # the latest request's time: the counters' expiry is reckoned from it
        self.failures = 0

    def add(self, key: Any, now: float) -> None:
        index = math.floor(now / self.window)
        self._now = max(self._now, now)
        pending = self._pending
        slot = (key, index)
        if slot in pending:
            pending[slot] += 1
        elif len(pending) < self.max_callers:
            pending[slot] = 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def since(self, key: Any, index: int) -> int:
        """Requests of `key` in window `index` counted here and not sent yet."""
        return self._pending.get((key, index), 0)

    async def _run(self) -> None:
        idle = 0
        while idle < 5:  # about a second without requests: stop (the next `add` starts it again)
            await asyncio.sleep(self.interval)
            if not self._pending:
                idle += 1
                continue
            idle = 0
            await self.flush()

    async def flush(self) -> None:
        """Send the counts gathered so far; their totals go to `on_count`. A backend down: counted locally."""
        sent, self._pending = self._pending, {}
        items = list(sent.items())
        for start in range(0, len(items), SYNC_BATCH):
            chunk = items[start:start + SYNC_BATCH]
            hits = [Hit(f"{tag('usage_anomaly', key)}:{index}", "fixed_window", limit=_UNBOUNDED,
                        period=self.window, cost=count, anchor=index * self.window)
                    for (key, index), count in chunk]
            try:
                outcomes: list[Outcome] = await self.state.hit(hits, self._now)
            except StateUnavailable:
                self.failures += 1
                continue
            for ((key, index), _), outcome in zip(chunk, outcomes, strict=True):
                self.on_count(key, index, _UNBOUNDED - outcome.remaining)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
