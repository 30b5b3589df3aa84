"""The admin API: authentication, audit of every action, policies, report and dashboard."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bastion.server.app import Runtime
from bastion.stages.base import Services
from tests.helpers import BASIC, legacy_tls_exception, request, running_gateway

pytestmark = pytest.mark.asyncio

def _admin(gw: Runtime) -> int:
    assert gw.admin_bound is not None
    return gw.admin_bound[1]


TOKEN = "admin-token-for-tests-only"
AUTH = BASIC.replace(
    "admin: {address: 127.0.0.1, port: 0}",
    "admin:\n    address: 127.0.0.1\n    port: 0\n"
    f"    auth: {{token_sha256: [{hashlib.sha256(TOKEN.encode()).hexdigest()}]}}\n"
    "  audit: {sinks: [{type: file, path: audit.jsonl}]}",
)


async def test_admin_refuses_unauthenticated_callers_and_audits_every_action(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, AUTH) as gw:
        admin = _admin(gw)
        assert (await request(admin, "GET", "/healthz"))[0] == 200  # open path
        status, headers, _ = await request(admin, "GET", "/policies")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        status, _, _ = await request(admin, "POST", "/reload", {"Authorization": "Bearer wrong"})
        assert status == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        status, _, body = await request(admin, "GET", "/policies", good)
        assert status == 200 and "shop/list-items" in json.dumps(json.loads(body))
        assert (await request(admin, "POST", "/reload", good))[0] == 200
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    actions = [(e["unmapped"]["bastion"]["admin_action"], e["unmapped"]["bastion"]["outcome"])
               for e in events if "admin_action" in e["unmapped"]["bastion"]]
    assert ("admin.GET /policies", "failure") in actions
    assert ("admin.POST /reload", "failure") in actions
    assert ("admin.GET /policies", "success") in actions
    assert ("config.reload", "success") in actions


async def test_report_inventory_and_dashboard_from_the_running_gateway(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, AUTH) as gw:
        good = {"Authorization": f"Bearer {TOKEN}"}
        port, admin = gw.bound[0][1], _admin(gw)
        for _ in range(3):
            await request(port, "GET", "/shop/orders/12")  # an undeclared path, three times
        await gw.services.audit.close()  # flush the queue to the file before reading it back
        await gw.services.audit.start()
        status, _, body = await request(admin, "GET", "/report", good)
        report = json.loads(body)
        assert status == 200 and report["kpis"]["routes"] == 2
        status, _, body = await request(admin, "GET", "/inventory", good)
        assert status == 200 and "/shop/orders/{n}" in body.decode()
        status, headers, page = await request(admin, "GET", "/dashboard", good)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"<script" not in page


async def test_admin_off_loopback_needs_auth(tmp_path: Path) -> None:
    from bastion.config.loader import ConfigError, load_config

    path = tmp_path / "b.yaml"
    path.write_text(BASIC.replace("admin: {address: 127.0.0.1, port: 0}", "admin: {address: 0.0.0.0, port: 0}")
                    .replace("{upstream}", "http://127.0.0.1:9"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "needs `auth`" in str(info.value)


async def test_admin_answers_bad_input_with_4xx(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, BASIC) as gw:
        admin = _admin(gw)
        status, _, _ = await request(admin, "POST", "/blocks", {"Content-Type": "application/json"}, b"x" * (1024 * 1024 + 1))
        assert status == 413
        for body in (b"{not json", b"[]", b'{"kind": "ip", "key": "1.2.3.4", "seconds": "soon"}'):
            status, headers, _ = await request(admin, "POST", "/blocks", {"Content-Type": "application/json"}, body)
            assert status == 400 and headers["content-type"] == "application/problem+json"
        assert (await request(admin, "POST", "/revocations", {}, b"{}"))[0] == 400
        assert (await request(admin, "GET", "/reload"))[0] == 405


async def test_admin_body_one_byte_over_max_body_bytes_is_413_audited_and_counted(tmp_path: Path) -> None:
    config = AUTH.replace("    port: 0\n", "    port: 0\n    max_body_bytes: 2KiB\n", 1)
    good = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with running_gateway(tmp_path, config) as gw:
        admin = _admin(gw)
        status, _, _ = await request(admin, "POST", "/blocks", good, b"x" * 2048)  # at the limit: read, then 400
        assert status == 400
        status, headers, _ = await request(admin, "POST", "/blocks", good, b"x" * 2049)
        assert status == 413 and headers["content-type"] == "application/problem+json"
        _, _, metrics = await request(admin, "GET", "/metrics", good)
        assert b'bastion_decisions_total{control="admin",outcome="deny",reason="admin_body_too_large"} 1.0' in metrics
    events = [json.loads(line)["unmapped"]["bastion"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    refused = [e for e in events if e.get("admin_action") == "admin.POST /blocks" and e["outcome"] == "failure"]
    assert [e.get("reason") for e in refused] == [None, "admin_body_too_large"]  # the 400, then the 413
    assert "2048 bytes" in refused[1]["detail"]


EXPIRING = legacy_tls_exception("2031-11-01T00:00:00Z", "2031-12-01T00:00:00Z")


def _cli_report(path: Path, at: float) -> dict[str, Any]:
    when = datetime.fromtimestamp(at, UTC).isoformat()
    out = subprocess.run([sys.executable, "-m", "bastion", "report", "-c", str(path), "--at", when, "--format",
                          "json"], capture_output=True, text=True, check=True, timeout=60)
    return dict(json.loads(out.stdout))


async def test_evidence_follows_the_plan_schedule_across_an_exception_boundary(tmp_path: Path) -> None:
    """Dashboard, /report, /policies and the CLI report agree with enforcement on both sides of an expiry,
    with no reload in between: all read the same plan schedule at the same injected instant."""
    expires = datetime(2031, 12, 1, tzinfo=UTC).timestamp()
    clock = {"now": expires - 60}
    services = Services(wall_clock=lambda: clock["now"])
    async with running_gateway(tmp_path, EXPIRING, services) as gw:
        port, admin = gw.bound[0][1], _admin(gw)
        seen = []
        for now, status, relaxed, coverage, source in [
            (expires - 60, 200, ["transport.tls"], 50.0, "exception:EXC-42"),
            (expires, 403, [], 100.0, "class:internal"),
        ]:
            clock["now"] = now
            assert (await request(port, "GET", "/ping"))[0] == status  # enforcement
            report = json.loads((await request(admin, "GET", "/report"))[2])
            ping = next(r for r in report["routes"] if r["route"] == "legacy/ping")
            assert (ping["relaxed_controls"], report["kpis"]["baseline_coverage"]) == (relaxed, coverage)
            assert report["kpis"]["active_exceptions"] == len(relaxed)
            policies = json.loads((await request(admin, "GET", "/policies"))[2])
            assert policies["routes"]["legacy/ping"]["controls"]["transport.tls"]["source"] == source
            page = (await request(admin, "GET", "/dashboard/routes"))[2].decode()
            assert ("relaxed: transport.tls" in page) == bool(relaxed)
            cli = await asyncio.to_thread(_cli_report, tmp_path / "bastion.yaml", now)
            assert cli["kpis"] == {k: v for k, v in report["kpis"].items() if k != "denied_requests"}
            assert [r["relaxed_controls"] for r in cli["routes"]] == [r["relaxed_controls"] for r in report["routes"]]
            seen.append(coverage)
        assert seen == [50.0, 100.0]


async def test_every_admin_answer_has_a_request_id(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, AUTH) as gw:
        admin = _admin(gw)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        seen = set()
        for method, path, headers, status in [
            ("GET", "/nowhere", bearer, 404), ("GET", "/healthz", {}, 200), ("GET", "/metrics", bearer, 200),
            ("GET", "/policies", {}, 401), ("GET", "/policies", bearer, 200), ("GET", "/reload", bearer, 405),
            ("POST", "/blocks", bearer, 400), ("GET", "/dashboard", bearer, 200), ("GET", "/report", bearer, 200),
        ]:
            got, answer, _ = await request(admin, method, path, headers)
            assert got == status, path
            assert answer.get("x-request-id", "").startswith("admin-"), path
            seen.add(answer["x-request-id"])
        assert len(seen) == 9  # one per request


def _probe_result(route: str, attack: str, result: str) -> dict[str, Any]:
    return {"route": route, "attack": attack, "control": "transport", "method": "GET", "path": "/x",
            "expected": 403, "observed": 200 if result == "fail" else 403, "result": result, "detail": ""}


async def test_a_published_probe_is_evidence_and_a_failure_marks_its_route_red(tmp_path: Path) -> None:
    expires = datetime(2031, 12, 1, tzinfo=UTC).timestamp()
    services = Services(wall_clock=lambda: expires - 60)
    async with running_gateway(tmp_path, EXPIRING, services) as gw:
        admin = _admin(gw)
        doc = {"kind": "bastion.probe", "version": 1, "target": "http://127.0.0.1:1", "config_hash": "x",
               "time": expires - 120, "summary": {},
               "results": [_probe_result("legacy/ping", "no_token", "pass"),
                           _probe_result("legacy/pong", "plaintext", "fail")]}
        assert (await request(admin, "POST", "/probe", {}, b"{not json"))[0] == 400
        assert (await request(admin, "POST", "/probe", {}, json.dumps({**doc, "results": [{}]}).encode()))[0] == 400
        status, _, body = await request(admin, "POST", "/probe", {}, json.dumps(doc).encode())
        assert status == 200 and json.loads(body)["summary"] == {"pass": 1, "fail": 1, "skip": 0}
        report = json.loads((await request(admin, "GET", "/report"))[2])
        routes = {r["route"]: r for r in report["routes"]}
        assert (routes["legacy/pong"]["probe"]["fail"], routes["legacy/ping"]["probe"]["pass"]) == (1, 1)
        assert report["probe"]["time"] == "2031-11-30T23:58:00Z" and report["kpis"]["probe_failures"] == 1
        page = (await request(admin, "GET", "/dashboard/routes"))[2].decode()
        assert '<span class="bad">legacy/pong</span>' in page and "1 failed, 0 passed (2031-11-30T23:58:00Z)" in page
        assert '<span class="bad">legacy/ping</span>' not in page
