"""The process's limiter: the shared state backend, local leases of batches of units, and the local fallback
used while the shared state is unreachable (`on_state_error: open_local`).

Leases: a limit with `lease: N` takes up to N units from Redis at once and spends them here, so most requests
need no round trip. Every leased unit was charged centrally, so over any window the total admitted exceeds
the limit by at most (gateway processes x N) per limit key: units charged in one window and spent (at most
`lease_ttl` later) in the next. Units not spent within `lease_ttl` are lost (the same bound, under-admission).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from bastion.cache import BoundedCache
from bastion.state import Hit, Outcome, StateBackend, StateUnavailable
from bastion.state.memory import MemoryState

Alert = Callable[[str, dict[str, Any]], None]


class Limiter:
    """Charges a request's hits against the shared state, with leases and an optional local fallback."""

    def __init__(self, state: StateBackend, *, alert: Alert | None = None, lease_ttl: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic, max_leases: int = 65_536) -> None:
        self.state = state
        self.local = MemoryState()  # counts in this process only: the `open_local` fallback
        self.alert = alert
        self.lease_ttl = lease_ttl
        self.monotonic = monotonic
        self.degraded = False  # True while running on the local fallback
        # key -> [units left, expires (monotonic), last reset]; a lease evicted early is units lost (safe side)
        self._leases: BoundedCache[str, list[float]] = BoundedCache(max_leases)
        self._shared = getattr(state, "name", "") != "memory"
        # This process's own memory state: `hit` would only await its `hit`, which never raises and never waits,
        # so the stage may call `memory.hit_now` directly (no coroutine per request). None for any other backend.
        self.memory: MemoryState | None = state if type(state) is MemoryState else None

    async def hit(self, hits: Sequence[Hit], now: float, *, leases: Sequence[int] = (),
                  fail_open: bool = False) -> list[Outcome]:
        """Outcomes for `hits` (all charged or none). Raises StateUnavailable unless `fail_open`."""
        try:
            if self._shared and any(leases):
                outcomes = await self._leased(hits, leases, now)
            else:
                outcomes = await self.state.hit(hits, now)
        except StateUnavailable as exc:
            if not fail_open:
                raise
            if not self.degraded:
                self.degraded = True
                self._alert("state.unavailable", {"backend": self.state.name, "error": str(exc),
                                                  "fallback": "local"})
            return self.local.hit_now(hits, now)
        if self.degraded:
            self.degraded = False
            self._alert("state.recovered", {"backend": self.state.name})
        return outcomes

    def _alert(self, event: str, detail: dict[str, Any]) -> None:
        if self.alert is not None:
            with contextlib.suppress(Exception):  # an alert sink must never change the decision
                self.alert(event, detail)

    async def _leased(self, hits: Sequence[Hit], leases: Sequence[int], now: float) -> list[Outcome]:
        mono = self.monotonic()
        table = self._leases
        outcomes: list[Outcome | None] = [None] * len(hits)
        local: list[tuple[int, list[float]]] = []
        remote_at: list[int] = []
        remote: list[Hit] = []
        for i, hit in enumerate(hits):
            lease = leases[i] if i < len(leases) else 0
            if lease:
                entry = table.get(hit.key, mono)
                if entry is not None and entry[0] >= hit.cost:
                    outcomes[i] = Outcome(True, int(entry[0] - hit.cost), entry[2], 0.0, hit.cost)
                    local.append((i, entry))
                    continue
                if lease > hit.cost:
                    hit = hit.leasing(lease)
            remote_at.append(i)
            remote.append(hit)
        if remote:
            got = await self.state.hit(remote, now)
            for i, outcome in zip(remote_at, got, strict=True):
                outcomes[i] = outcome
            if not all(o.allowed for o in got):
                return outcomes  # type: ignore[return-value]  # nothing charged, leases untouched
            for i, outcome in zip(remote_at, got, strict=True):
                extra = outcome.granted - hits[i].cost
                if extra > 0:
                    entry = table.get(hits[i].key, mono)
                    if entry is not None:
                        entry[0] += extra
                        entry[1], entry[2] = mono + self.lease_ttl, outcome.reset
                    else:
                        entry = [float(extra), mono + self.lease_ttl, outcome.reset]
                    table.put(hits[i].key, entry, mono, entry[1])
                    outcomes[i] = outcome.topped_up(extra)
        for i, entry in local:
            entry[0] -= hits[i].cost
        return outcomes  # type: ignore[return-value]
