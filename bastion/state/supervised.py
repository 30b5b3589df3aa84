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
from bastion.state.memory import MemoryState


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


class StateService:
    """The supervisor's side: answers the workers' state calls from one `MemoryState`."""

    def __init__(self, state: MemoryState) -> None:
        from bastion.stages.identity.revocation import records_for

        self.state = state
        self.records: Any = records_for(state)

    async def handle(self, op: str, args: list[Any]) -> Any:
        """The answer to one call; raises KeyError for an unknown operation (answered as an error)."""
        return await self._ops[op](self, *args)

    async def _ping(self) -> bool:
        return True

    async def _hit(self, hits: list[list[Any]], now: float) -> list[list[Any]]:
        outcomes = self.state.hit_now([Hit(h[0], h[1], h[2], h[3], h[4], h[5], h[6]) for h in hits], now)
        return [[o.allowed, o.remaining, o.reset, o.retry_after, o.granted] for o in outcomes]

    async def _block(self, kind: str, key: str, until: float) -> None:
        await self.state.block(kind, key, until)

    async def _unblock(self, kind: str, key: str) -> None:
        await self.state.unblock(kind, key)

    async def _is_blocked(self, kind: str, key: str, now: float | None) -> float | None:
        return await self.state.is_blocked(kind, key, now)

    async def _list_blocks(self) -> list[tuple[str, str, float]]:
        return await self.state.list_blocks()

    async def _rec_get(self, keys: list[str]) -> list[str | None]:
        return list(await self.records.get(keys))

    async def _rec_merge(self, key: str, kind: str, value: str, text: str, now: float) -> None:
        from bastion.stages.identity.revocation import Revocation

        await self.records.merge(key, Revocation.decode(kind, value, text), now)

    async def _rec_put_new(self, key: str, until: float, now: float) -> bool:
        return bool(await self.records.put_new(key, until, now))

    async def _rec_delete(self, key: str) -> bool:
        return bool(await self.records.delete(key))

    async def _rec_scan(self, prefix: str, limit: int) -> list[tuple[str, str]]:
        return list(await self.records.scan(prefix, limit))

    # every operation is a dict operation that never suspends: the link answers them inline
    INLINE = frozenset({"ping", "hit", "block", "unblock", "is_blocked", "list_blocks", "rec_get", "rec_merge",
                        "rec_put_new", "rec_delete", "rec_scan"})

    _ops: dict[str, Any] = {
        "ping": _ping, "hit": _hit, "block": _block, "unblock": _unblock, "is_blocked": _is_blocked,
        "list_blocks": _list_blocks,
        "rec_get": _rec_get, "rec_merge": _rec_merge, "rec_put_new": _rec_put_new, "rec_delete": _rec_delete,
        "rec_scan": _rec_scan,
    }
