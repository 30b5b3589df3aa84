"""The retry budget and `Retry-After` values (RFC 9110 §10.2.3)."""

from __future__ import annotations

import pytest

from bastion.upstreams.retry import IDEMPOTENT, RetryBudget, retry_after


def test_budget_is_a_share_of_requests_in_flight_with_a_floor() -> None:
    budget = RetryBudget(percent=20, min_concurrency=2)
    budget.requests = 100
    budget.retries = 19
    assert budget.allows()
    budget.retries = 20
    assert not budget.allows()
    budget.requests, budget.retries = 3, 1
    assert budget.allows()  # under the floor
    budget.retries = 2
    assert not budget.allows()


@pytest.mark.parametrize(("value", "seconds"), [
    (b"120", 120.0),
    (b" 5 ", 5.0),
    (b"Wed, 09 Dec 2026 12:00:30 GMT", 30.0),
    (b"Wed, 09 Dec 2026 11:00:00 GMT", 0.0),  # in the past: no wait
    (b"soon", None),
    (b"", None),
    (None, None),
    (b"-3", None),
])
def test_retry_after_values(value: bytes | None, seconds: float | None) -> None:
    now = 1796817600.0  # 2026-12-09T12:00:00Z, injected
    assert retry_after(value, now) == seconds


def test_only_idempotent_methods() -> None:
    assert {"GET", "PUT", "DELETE", "HEAD"} <= IDEMPOTENT
    assert not {"POST", "PATCH"} & IDEMPOTENT
