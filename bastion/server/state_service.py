"""The supervisor's side of the embedded shared state: it answers the workers' state calls (`SupervisedState`
in bastion/state/supervised.py, over the worker link) from one `MemoryState`, revocation records included."""

from __future__ import annotations

from typing import Any

from bastion.stages.identity.revocation import Revocation, records_for
from bastion.state import Hit
from bastion.state.memory import MemoryState


class StateService:
    """The supervisor's side: answers the workers' state calls from one `MemoryState`."""

    def __init__(self, state: MemoryState) -> None:
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
