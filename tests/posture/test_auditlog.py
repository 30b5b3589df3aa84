"""Reading audit events back: the probe's own traffic is recognised by what the gateway verified, never by what
the client claims."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.posture import auditlog, inventory
from bastion.posture.auditlog import ProbeMarks
from bastion.posture.report import denials
from tests.posture.conftest import audit_event, demo_config


def _event(subject: str | None, ip: str = "10.0.0.1", **kw: Any) -> dict[str, Any]:
    event = audit_event("/orders/1", api="orders", route="get-order", ip=ip, caller=subject, **kw)
    event["unmapped"]["bastion"]["subject"] = subject  # set only once identity accepted the token
    return event


MARKS = ProbeMarks.of(["bastion-probe"], ["192.0.2.0/24"])


@pytest.mark.parametrize(("event", "probe"), [
    (_event("bastion-probe"), True),  # the probe's valid token
    (_event("alice"), False),
    (_event(None, decision="deny", reason="jwt_bad_signature", control="identity"), False),  # forged: unknown
    (_event(None, ip="192.0.2.7", decision="deny", reason="jwt_bad_signature", control="identity"), True),
    (_event("alice", ip="192.0.2.7"), True),  # everything from the probing network
    (_event(None, ip="not-an-ip"), False),
])
def test_probe_marks(event: dict[str, Any], probe: bool):
    assert next(auditlog.requests([event], MARKS)).probe is probe
    assert next(auditlog.requests([event])).probe is False  # no marks: nothing is the probe's


def test_a_claimed_user_agent_or_field_marks_nothing():
    event = _event("mallory")
    event["http_request"]["user_agent"] = "bastion-probe"
    event["unmapped"]["bastion"]["probe"] = True
    assert next(auditlog.requests([event], MARKS)).probe is False


def test_probe_events_are_left_out_of_denials_and_the_inventory(tmp_path: Path):
    now = time.time()
    events = list(auditlog.requests([
        _event("alice", time=now - 200 * 86400),
        _event("bastion-probe", decision="deny", reason="insufficient_scope", control="authz", time=now - 60),
        _event("bastion-probe", time=now - 60),
        _event("alice", decision="deny", reason="owner_mismatch", control="authz", time=now - 30),
    ], MARKS))
    d = denials(events)
    assert (d["requests"], d["probe_requests"], d["denied"], d["by_reason"]) == (2, 2, 1, {"owner_mismatch": 1})
    config, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9")
    compiled = compile_config(load_config(config), build_stages=False)
    doc = inventory.build(compiled, [e for e in events if e.decision == "allow"], now)
    route = next(r for r in doc["routes"] if r["route"] == "orders/get-order")
    # only the probe called it lately: still idle, and the probe is not a consumer
    assert route["idle"] and route["consumers"] == ["alice"]
