"""Health of a pool's targets: active probe results and passive outlier detection, as state changes.

Every change is returned as a `TargetEvent`, which the server turns into one metric and one audit event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bastion.upstreams.config import HealthCheckConfig, OutlierConfig
from bastion.upstreams.target import TargetState

# failures that say the target itself is unreachable (nothing was sent)
CONNECT_FAILURES = frozenset({"upstream_connect_failed", "upstream_connect_timeout"})
# failures that count like a 5xx answer: the target took the request and did not answer well
ANSWER_FAILURES = frozenset({"upstream_timeout", "upstream_body_timeout", "upstream_closed", "upstream_bad_response"})


@dataclass(frozen=True, slots=True)
class TargetEvent:
    """A change of a target's state: `ejected`, `unhealthy`, `healthy`, `breaker_open` or `retry_after`.

    `reason` is the stable code (`consecutive_5xx`, `consecutive_connect_failures`, `probe_failed`, ...) and
    `seconds` how long the target stays out, when that is known.
    """

    target: str
    action: str
    reason: str
    seconds: float = 0.0


class Health:
    """Applies what the pool observes to its targets' states. `now` is monotonic seconds, passed in."""

    def __init__(self, targets: Sequence[TargetState], outlier: OutlierConfig,
                 checks: HealthCheckConfig | None) -> None:
        self._targets = targets
        self._outlier = outlier
        self._checks = checks

    # ---- passive: outcomes of real requests ---------------------------------------------------------------

    def answered(self, target: TargetState, status: int, retry_after: float | None, now: float) -> list[TargetEvent]:
        """A response came back. 5xx in a row eject; a `Retry-After` on 429/503 holds the target back that long."""
        events: list[TargetEvent] = []
        target.consecutive_connect_failures = 0
        if status >= 500:
            target.consecutive_5xx += 1
            if target.consecutive_5xx >= self._outlier.consecutive_5xx:
                events += self._eject(target, "consecutive_5xx", now)
        else:
            target.consecutive_5xx = 0
            if now >= target.ejected_until:
                target.ejections = 0  # a good answer after the ejection ended: the next ejection starts short again
        if retry_after is not None and status in (429, 503) and retry_after > 0:
            # RFC 9110 §10.2.3: the target asked not to be sent requests for this long (capped by config)
            seconds = min(retry_after, self._outlier.max_ejection)
            target.not_before = max(target.not_before, now + seconds)
            events.append(TargetEvent(target.name, "retry_after", f"status_{status}", seconds))
        return events

    def failed(self, target: TargetState, reason: str, now: float) -> list[TargetEvent]:
        """No usable response: a connect failure, or a timeout / broken answer (counted like a 5xx)."""
        if reason in CONNECT_FAILURES:
            target.consecutive_connect_failures += 1
            if target.consecutive_connect_failures >= self._outlier.consecutive_connect_failures:
                return self._eject(target, "consecutive_connect_failures", now)
        elif reason in ANSWER_FAILURES:
            target.consecutive_5xx += 1
            if target.consecutive_5xx >= self._outlier.consecutive_5xx:
                return self._eject(target, "consecutive_5xx", now)
        return []

    def _eject(self, target: TargetState, reason: str, now: float) -> list[TargetEvent]:
        if now < target.ejected_until:
            return []
        ejected = sum(1 for t in self._targets if now < t.ejected_until)
        # never eject more than the configured share of the pool (one target may always go)
        if ejected >= 1 and (ejected + 1) * 100 > self._outlier.max_ejected_percent * len(self._targets):
            return []
        seconds = min(self._outlier.base_ejection * 2 ** target.ejections, self._outlier.max_ejection)
        target.ejections += 1
        target.ejected_until = now + seconds
        target.consecutive_5xx = target.consecutive_connect_failures = 0
        return [TargetEvent(target.name, "ejected", reason, seconds)]

    # ---- active: probes -----------------------------------------------------------------------------------

    def probed(self, target: TargetState, passed: bool, reason: str) -> list[TargetEvent]:
        """One probe's result; thresholds of consecutive results flip the target's health."""
        checks = self._checks
        if checks is None:
            return []
        if passed:
            target.passes, target.fails = target.passes + 1, 0
            if not target.healthy and target.passes >= checks.healthy_threshold:
                target.healthy = True
                return [TargetEvent(target.name, "healthy", "probe_passed")]
        else:
            target.passes, target.fails = 0, target.fails + 1
            if target.healthy and target.fails >= checks.unhealthy_threshold:
                target.healthy = False
                return [TargetEvent(target.name, "unhealthy", reason, checks.interval * checks.healthy_threshold)]
        return []

    def back_in(self, now: float) -> float:
        """Seconds until some target may be tried again (the `Retry-After` of a 503 with none available)."""
        waits = [max(t.ejected_until, t.not_before) - now for t in self._targets
                 if t.healthy and not t.available(now)]
        if self._checks is not None and any(not t.healthy for t in self._targets):
            waits.append(self._checks.interval * self._checks.healthy_threshold)
        return max(1.0, math.ceil(min(waits))) if waits else 1.0
