"""Drift alerting: a real compiled config watched every 50 ms; one finding when it drifts, one when it agrees."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bastion.audit.events import Ids
from bastion.audit.ocsf import validate
from bastion.compile import CompiledGateway, compile_config
from bastion.config.drift import DriftConfig
from bastion.config.loader import load_config
from bastion.posture.drift import DriftWatch
from tests.posture.conftest import demo_config, dump_doc, load_doc
from tests.posture.test_probe import _weaken

NOW = 1_800_000_000.0  # the fake clock of the events


class Events:
    """The audit log's interface the watch uses: `emit` and `ids.new()`; keeps what was emitted."""

    def __init__(self) -> None:
        self.ids = Ids()
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        assert validate(event) == [], validate(event)
        self.events.append(event)


def _compiled(path: Path, now: float | None = None) -> CompiledGateway:
    return compile_config(load_config(path), now=now, build_stages=False)


def _configs(tmp_path: Path) -> tuple[Path, Path]:
    approved, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9")
    doc = load_doc(approved.read_text())
    _weaken(doc)
    weak = tmp_path / "weak.yaml"
    weak.write_text(dump_doc(doc))
    return approved, weak


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _gauge(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("bastion_config_drift")


async def test_one_finding_when_the_running_config_drifts_and_one_when_it_agrees_again(tmp_path: Path):
    approved, weak = _configs(tmp_path)
    running = {"compiled": _compiled(approved)}
    events, registry = Events(), CollectorRegistry()
    watch = DriftWatch(approved, lambda: running["compiled"], events, 0.05, registry=registry, clock=lambda: NOW)
    await watch.start()
    try:
        await _until(lambda: watch.checks >= 3)
        assert (watch.drifting, events.events, _gauge(registry)) == (False, [], 0.0)

        running["compiled"] = _compiled(weak)  # a reload of an unapproved config
        await _until(lambda: watch.drifting)
        checks = watch.checks
        await _until(lambda: watch.checks >= checks + 3)  # still drifting: nothing more is emitted
        assert len(events.events) == 1 and _gauge(registry) == 1.0
        found = events.events[0]
        assert (found["class_uid"], found["activity_id"], found["severity_id"], found["is_alert"]) == (2004, 1, 4, True)
        assert found["time"] == int(NOW * 1000)
        bastion = found["unmapped"]["bastion"]
        assert (bastion["detection"], bastion["state"], bastion["weakenings"], bastion["changes_total"]) == (
            "config_drift", "drift", 6, 6)  # 4 route weakenings and the 2 exceptions that allow them
        assert bastion["approved_hash"] != bastion["running_hash"] == running["compiled"].config_hash
        first = bastion["changes"][0]
        assert (first["route"], first["control"], first["kind"], first["after"]) == (
            "catalog/list-products", "identity", "weaker", "waived (exception:EXC-WEAK-1)")
        assert "6 effective-policy change(s), 6 weakening(s)" in found["finding_info"]["desc"]
        assert found["finding_info"]["attacks"][0]["technique"]["uid"] == "T1562"

        running["compiled"] = _compiled(approved)  # rolled back
        await _until(lambda: watch.drifting is False)
        checks = watch.checks
        await _until(lambda: watch.checks >= checks + 3)
        assert len(events.events) == 2 and _gauge(registry) == 0.0
        closed = events.events[1]
        assert (closed["activity_name"], closed["status"], closed["type_uid"], closed["is_alert"]) == (
            "Close", "Resolved", 200403, False)
        assert closed["finding_info"]["uid"] == found["finding_info"]["uid"]  # the same finding, closed
        assert closed["unmapped"]["bastion"]["state"] == "resolved"
    finally:
        await watch.close()
    assert watch._task is None


async def test_a_new_drift_while_drifting_closes_the_old_finding_and_opens_a_new_one(tmp_path: Path):
    approved, weak = _configs(tmp_path)
    doc = load_doc(weak.read_text())
    doc["apis"][1]["routes"].append({"name": "debug", "path": "/debug", "methods": ["GET"]})
    weaker = tmp_path / "weaker.yaml"
    weaker.write_text(dump_doc(doc))
    events = Events()
    running = {"compiled": _compiled(weak)}
    watch = DriftWatch(approved, lambda: running["compiled"], events, 60.0, registry=CollectorRegistry())
    await watch.check()
    await watch.check()
    assert len(events.events) == 1
    running["compiled"] = _compiled(weaker)  # one more exposure: operators must hear about it
    changes = await watch.check()
    assert changes is not None and ("catalog/debug", "added") in {(c.route, c.kind) for c in changes}
    assert [e["activity_name"] for e in events.events] == ["Create", "Close", "Create"]
    assert events.events[2]["unmapped"]["bastion"]["changes_total"] == 7


async def test_an_unreadable_approved_file_is_reported_once_and_changes_nothing(tmp_path: Path):
    approved, _ = _configs(tmp_path)
    events, registry = Events(), CollectorRegistry()
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\napis: [")
    watch = DriftWatch(broken, lambda: _compiled(approved), events, 0.05, registry=registry)
    await watch.start()
    try:
        await _until(lambda: watch.checks >= 4)
    finally:
        await watch.close()
    assert len(events.events) == 1 and watch.drifting is None and _gauge(registry) == 0.0
    failure = events.events[0]
    assert (failure["class_uid"], failure["unmapped"]["bastion"]["admin_action"],
            failure["unmapped"]["bastion"]["outcome"]) == (6003, "config.drift_check", "failure")
    broken.write_text(approved.read_text())  # fixed: the next check succeeds and agrees
    assert await watch.check() == [] and not watch.failing


async def test_an_exception_that_expired_after_the_last_reload_is_not_drift(tmp_path: Path):
    """Both sides are compiled for the running config's load time."""
    now = datetime.now(UTC)

    def expiring(doc: dict) -> None:
        doc["exceptions"].append(
            {"id": "EXC-GONE", "target": {"api": "orders", "route": "get-order"},
             "controls": ["traffic.max_body_bytes"], "owner": "o@example.com", "reason": "import",
             "evidence": "https://t/3", "created": (now - timedelta(days=3)).isoformat(),
             "expires": (now - timedelta(days=1)).isoformat()})
        doc["apis"][0]["routes"][2]["policy"]["traffic"] = {"max_body_bytes": "1MiB"}

    approved, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9", expiring)
    loaded_two_days_ago = _compiled(approved, now=(now - timedelta(days=2)).timestamp())
    events = Events()
    watch = DriftWatch(approved, lambda: loaded_two_days_ago, events, 60.0, registry=CollectorRegistry())
    assert await watch.check() == [] and events.events == []
    # compiled today instead, the expiry would read as a change of the running gateway
    from bastion.posture.diff import compare, effective_policies
    today = effective_policies(_compiled(approved))
    # (and EXC-DEMO-1, created today, was not yet in force two days ago)
    assert {(c.route, c.control) for c in compare(today, effective_policies(loaded_two_days_ago))} == {
        ("orders/get-order", "traffic.max_body_bytes"), ("catalog/status", "identity.required")}


def test_drift_config():
    config = DriftConfig.model_validate({"approved": "approved/bastion.yaml"})
    watch = DriftWatch.from_config(config, Path("/etc/bastion"), lambda: None, Events(),  # type: ignore[arg-type,return-value]
                                   CollectorRegistry())
    assert watch.approved_path == Path("/etc/bastion/approved/bastion.yaml") and watch.interval == 300.0
