"""The audit event of a target's state change."""

from __future__ import annotations

import pytest

from bastion.upstreams.events import target_event
from bastion.upstreams.health import TargetEvent


@pytest.mark.parametrize(("action", "severity", "status"), [
    ("ejected", 3, "Failure"), ("breaker_open", 3, "Failure"), ("unhealthy", 3, "Failure"),
    ("retry_after", 2, "Failure"), ("healthy", 1, "Success"),
])
def test_event_per_action(action: str, severity: int, status: str) -> None:
    event = target_event("u1", "shop", TargetEvent("10.0.0.1:8080", action, "consecutive_5xx", 10.0), 1.5)
    assert event["api"] == {"operation": f"upstream.{action}", "service": {"name": "shop"}}
    assert (event["severity_id"], event["status"], event["time"]) == (severity, status, 1500)
    assert event["dst_endpoint"] == {"hostname": "10.0.0.1", "port": 8080}
    assert event["unmapped"]["bastion"] == {"upstream_event": action, "reason": "consecutive_5xx", "api": "shop",
                                            "target": "10.0.0.1:8080", "seconds": 10.0}
    assert event["metadata"]["uid"] == "u1"


def test_ipv6_target() -> None:
    event = target_event("u", "a", TargetEvent("[::1]:9000", "ejected", "r"), 0.0)
    assert event["dst_endpoint"] == {"hostname": "[::1]", "port": 9000}
