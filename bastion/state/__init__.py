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
from typing import Protocol, TypedDict, Unpack, runtime_checkable
from urllib.parse import urlsplit

from bastion.state.values import Hit, Kind, Outcome


class StateUnavailable(Exception):
    """The shared state cannot be reached in time. The caller decides: fail closed or fall back locally."""


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
