"""Shared state for limits, revocations and temporary blocks: in-memory (one process) or Redis (every worker).

A backend answers one question per request, atomically: "may these hits be charged now?". Every limit of the
request is checked and charged together (all or nothing), in one call, so a request refused by one limit does
not use up another, and a Redis backend needs one round trip per request at most.

```python
state = open_state("redis://127.0.0.1:6379/0")
[outcome] = await state.hit([Hit("rl:api:c:acme", "sliding_window", limit=100, period=60)], now=time.time())
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, Unpack, runtime_checkable
from urllib.parse import urlsplit

Kind = Literal["token_bucket", "sliding_window", "fixed_window"]


class StateUnavailable(Exception):
    """The shared state cannot be reached in time. The caller decides: fail closed or fall back locally."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One limit to charge for one request.

    - `token_bucket`: `limit` is the bucket size (burst), refilled from empty to full in `period` seconds
      (rate = limit / period).
    - `sliding_window`: at most `limit` units in any `period` seconds, estimated from the current and
      previous fixed windows (the previous one weighted by how much of it still overlaps), so no double quota
      at an edge.
    - `fixed_window`: at most `limit` units in the window starting at `anchor` (wall-clock seconds) and
      lasting `period` seconds: calendar quotas (a day, a month).

    `take` > `cost` asks for a lease: take up to `take` units if available (at least `cost`), see
    `Outcome.granted`.
    """

    key: str
    kind: Kind
    limit: float
    period: float
    cost: int = 1
    take: int = 0
    anchor: float = 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one hit found: admitted or not, what is left and when to come back."""

    allowed: bool
    remaining: int  # whole units left after this request (what a client may still send now)
    reset: float  # seconds until the limit is fully (token bucket) or partly (windows) available again
    retry_after: float  # seconds until this hit could be admitted; 0 when admitted
    granted: int = 0  # units actually taken (cost, or more when a lease was asked for; 0 when refused)


@runtime_checkable
class StateBackend(Protocol):
    """What the traffic layer (and later revocations) need from shared state."""

    name: str

    async def hit(self, hits: Sequence[Hit], now: float) -> list[Outcome]:
        """Check every hit; charge all of them only if all are admitted. Raises StateUnavailable."""
        ...

    async def block(self, kind: str, key: str, until: float) -> None:
        """Mark `kind`/`key` (e.g. `revoked`/`<jti>`, `ip`/`203.0.113.9`) blocked until wall time `until`."""
        ...

    async def unblock(self, kind: str, key: str) -> None: ...

    async def is_blocked(self, kind: str, key: str, now: float | None = None) -> float | None:
        """The wall time the block ends, or None when not blocked. Raises StateUnavailable."""
        ...

    async def close(self) -> None: ...


class RedisOptions(TypedDict, total=False):
    """The Redis backend's tuning knobs that `open_state` passes on."""

    timeout: float
    retry_interval: float
    max_connections: int
    prefix: str


def open_state(url: str, password: str | None = None, max_keys: int = 200_000,
               **options: Unpack[RedisOptions]) -> StateBackend:
    """`memory`, `redis://host:6379/0`, `rediss://...`, `unix:///run/redis.sock`,
    `redis+sentinel://host1:26379,host2:26379/<service>/<db>` or `redis+cluster://host1:6379,host2:6379/`.

    `max_keys` bounds the memory backend's counters (`gateway.limits.max_rate_limit_keys`). `options` (e.g.
    `timeout=0.25`, `retry_interval=0.5`) tune the Redis backend. Nothing connects until the first call, so this
    may run before the event loop starts.
    """
    scheme = urlsplit(url).scheme if "://" in url else url
    if scheme in ("memory", ""):
        from bastion.state.memory import MemoryState

        return MemoryState(max_keys=max_keys)
    if scheme in ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "valkey", "valkeys"):
        from bastion.state.redis_state import RedisState

        return RedisState(url, password=password, **options)
    raise ValueError(f"unknown state backend {url!r}: use `memory` or `redis://host:6379/0`")


__all__ = ["Hit", "Kind", "Outcome", "StateBackend", "StateUnavailable", "open_state"]
