"""Real-time revocation: a deny list of token ids (`jti`), subjects and consumers, each until a given time.

`RevocationList` is the interface a shared state backend (Redis) implements so that all workers and instances
see the same list; `MemoryRevocationList` serves one process and the tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol

Kind = Literal["jti", "sub", "consumer"]


class RevocationList(Protocol):
    """What the identity stage asks on every request, cached token or not."""

    async def is_revoked(self, jti: str | None, sub: str | None, consumer: str | None,
                         issued_at: float | None = None) -> bool: ...

    async def revoke(self, kind: Kind, value: str, until: float, *,
                     issued_before: float | None = None) -> None:
        """Deny `value` until the wall-clock time `until`. With `issued_before`, only credentials issued
        before that instant are denied (a new login after a CAEP `session-revoked` works again)."""
        ...


class MemoryRevocationList:
    """An in-process deny list; expired entries are dropped when looked up or when the list grows."""

    def __init__(self, wall_clock: Callable[[], float] = time.time, max_entries: int = 1_000_000) -> None:
        self._now = wall_clock
        self._max = max_entries
        self._entries: dict[tuple[str, str], tuple[float, float | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def revoke(self, kind: Kind, value: str, until: float, *,
                     issued_before: float | None = None) -> None:
        if kind not in ("jti", "sub", "consumer"):
            raise ValueError(f"unknown revocation kind {kind!r}")
        key = (kind, value)
        old = self._entries.get(key)
        if old is not None and old[0] > until and old[1] is None:
            return  # a longer unconditional revocation already holds
        self._entries[key] = (until, issued_before)
        if len(self._entries) > self._max:
            self.prune()

    def prune(self) -> None:
        now = self._now()
        for key in [k for k, (until, _) in self._entries.items() if until <= now]:
            del self._entries[key]

    def _hit(self, kind: str, value: str | None, issued_at: float | None, now: float) -> bool:
        if value is None:
            return False
        entry = self._entries.get((kind, value))
        if entry is None:
            return False
        until, issued_before = entry
        if until <= now:
            del self._entries[(kind, value)]
            return False
        return issued_before is None or issued_at is None or issued_at < issued_before

    async def is_revoked(self, jti: str | None, sub: str | None, consumer: str | None,
                         issued_at: float | None = None) -> bool:
        if not self._entries:
            return False
        now = self._now()
        return (self._hit("jti", jti, issued_at, now) or self._hit("sub", sub, issued_at, now)
                or self._hit("consumer", consumer, issued_at, now))
