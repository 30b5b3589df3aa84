"""The embedded shared state of `serve --workers N` without Redis: the supervisor holds one `MemoryState` and
every worker reaches it over its link (`bastion.server.link`), so limits, blocks, revocations and detection
counters are the same in every worker of the machine.

```
worker ── SupervisedState.hit(...) ──► link ──► StateService (supervisor) ──► MemoryState
```
A call that is not answered within `timeout` raises `StateUnavailable`, exactly like an unreachable Redis: the
caller's `on_state_error` decides (fail closed, or count locally). Leases (`lease: N`) work as with Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from bastion.state import Hit, Outcome, StateUnavailable


class _Caller(Protocol):
    async def call(self, op: str, *args: Any, timeout: float = 1.0) -> Any: ...


def _hit_doc(hit: Hit) -> list[Any]:
    return [hit.key, hit.kind, hit.limit, hit.period, hit.cost, hit.take, hit.anchor]


class SupervisedState:
    """A worker's state backend: every operation is one call to the supervisor."""

    name = "supervisor"

    def __init__(self, link: _Caller, timeout: float = 0.25) -> None:
        self.link = link
        self.timeout = timeout
        self.available = True

    async def _call(self, op: str, *args: Any) -> Any:
        try:
            value = await self.link.call(op, *args, timeout=self.timeout)
        except Exception as exc:  # LinkClosed, RemoteError: the supervisor is gone or slow
            self.available = False
            raise StateUnavailable(f"supervisor state unavailable: {exc}") from exc
        self.available = True
        return value

    async def ping(self) -> None:
        """One round trip (the readiness probe): keeps `available` true to the supervisor without traffic."""
        await self._call("ping")

    async def hit(self, hits: Sequence[Hit], now: float) -> list[Outcome]:
        raw = await self._call("hit", [_hit_doc(h) for h in hits], now)
        return [Outcome(bool(o[0]), int(o[1]), float(o[2]), float(o[3]), int(o[4])) for o in raw]

    async def block(self, kind: str, key: str, until: float) -> None:
        await self._call("block", kind, key, until)

    async def unblock(self, kind: str, key: str) -> None:
        await self._call("unblock", kind, key)

    async def is_blocked(self, kind: str, key: str, now: float | None = None) -> float | None:
        until = await self._call("is_blocked", kind, key, now)
        return None if until is None else float(until)

    async def list_blocks(self) -> list[tuple[str, str, float]]:
        return [(str(k), str(v), float(u)) for k, v, u in await self._call("list_blocks")]

    def revocation_records(self) -> SupervisedRecords:
        """The revocation records (`bastion.stages.identity.revocation`) kept by the supervisor."""
        return SupervisedRecords(self)

    async def close(self) -> None:
        return None  # the link belongs to the worker's runtime


class SupervisedRecords:
    """Revocation records in the supervisor's memory. `empty` is False: other workers write there too."""

    empty = False

    def __init__(self, state: SupervisedState) -> None:
        self._state = state

    async def get(self, keys: Sequence[str]) -> list[str | None]:
        return list(await self._state._call("rec_get", list(keys)))

    async def merge(self, key: str, record: Any, now: float) -> None:
        await self._state._call("rec_merge", key, record.kind, record.value, record.encode(), now)

    async def put_new(self, key: str, until: float, now: float) -> bool:
        return bool(await self._state._call("rec_put_new", key, until, now))

    async def delete(self, key: str) -> bool:
        return bool(await self._state._call("rec_delete", key))

    async def scan(self, prefix: str, limit: int) -> list[tuple[str, str]]:
        return [(str(k), str(v)) for k, v in await self._state._call("rec_scan", prefix, limit)]
