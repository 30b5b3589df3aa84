"""When a request may be tried again on another target: idempotent, a budget with room, and a `Retry-After`
read the way RFC 9110 §10.2.3 writes it."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

# RFC 9110 §9.2.2: methods whose repetition has the effect of one request
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class RetryBudget:
    """Envoy's retry budget: retries in flight stay under `percent` of the requests in flight (or under
    `min_concurrency`), so that retries cannot turn one failing target into a storm on the others."""

    def __init__(self, percent: float, min_concurrency: int) -> None:
        self.percent = percent
        self.min_concurrency = min_concurrency
        self.requests = 0  # requests in flight through the pool
        self.retries = 0  # of which are retries now

    def allows(self) -> bool:
        return self.retries < max(self.min_concurrency, self.percent * self.requests / 100)


def retry_after(value: bytes | None, now: float) -> float | None:
    """Seconds asked for by a `Retry-After` value (delay-seconds or an HTTP-date; `now` is epoch seconds)."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(int(text))
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None
