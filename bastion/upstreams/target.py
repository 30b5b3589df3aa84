"""What a pool knows of one target: its load, its health and whether it is ejected (plain values, no IO)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class TargetState:
    """One target of a pool. `name` is `host:port`, the label of its metrics and audit events."""

    name: str
    weight: int = 1
    zone: str | None = None
    active: int = 0  # requests in flight to it (the breaker and least_requests read this)
    healthy: bool = True  # the verdict of active checks (True while none are configured)
    passes: int = 0  # consecutive passing probes
    fails: int = 0  # consecutive failing probes
    consecutive_5xx: int = 0
    consecutive_connect_failures: int = 0
    ejected_until: float = 0.0  # monotonic seconds; passive outlier detection
    ejections: int = 0  # how many times in a row it was ejected: each ejection lasts twice the last
    not_before: float = 0.0  # monotonic seconds; the target's own `Retry-After`
    breaker_open: bool = False  # the breaker refused it since it last had room (one audit event per trip)

    def available(self, now: float) -> bool:
        """Healthy, not ejected, not asking for a pause."""
        return self.healthy and now >= self.ejected_until and now >= self.not_before
