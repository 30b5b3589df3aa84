"""`bastion report`: KPIs, exceptions, gaps, OWASP mapping, probe and trend, in JSON, Markdown and HTML."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.posture import auditlog, render
from bastion.posture.probe import probe
from bastion.posture.report import build
from tests.helpers import request
from tests.posture.conftest import Demo, demo_config


def _stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def config_with_exceptions(tmp_path: Path, now: datetime | None = None) -> Path:
    """The demo config with one exception expiring in 10 days and one expired 5 days ago, relative to `now`."""
    now = now or datetime.now(UTC)

    def mutate(doc: dict) -> None:
        doc["apis"][0]["routes"][2]["policy"] = {"traffic": {"max_body_bytes": "1MiB"}}
        doc["exceptions"] += [
            {"id": "EXC-SOON", "target": {"api": "orders", "route": "get-order"},
             "controls": ["traffic.max_body_bytes"], "owner": "team-orders@example.com", "reason": "bulk import",
             "evidence": "https://tickets.example.com/SEC-7", "created": _stamp(now - timedelta(days=20)),
             "expires": _stamp(now + timedelta(days=10, hours=1))},
            {"id": "EXC-OLD", "target": {"api": "orders", "route": "list-orders"},
             "controls": ["identity.required"], "owner": "team-orders@example.com", "reason": "legacy",
             "evidence": "https://tickets.example.com/SEC-1", "created": _stamp(now - timedelta(days=60)),
             "expires": _stamp(now - timedelta(days=5))},
        ]

    path, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9", mutate, now=now)
    return path


def test_kpis_exceptions_and_gaps(tmp_path: Path):
    compiled = compile_config(load_config(config_with_exceptions(tmp_path)), build_stages=False)
    doc = build(compiled, time.time())
    k = doc["kpis"]
    assert (k["routes"], k["routes_meeting_baseline"], k["baseline_coverage"]) == (5, 3, 60.0)
    assert (k["active_exceptions"], k["exceptions_expiring_14d"], k["expired_exceptions"]) == (2, 1, 1)
    # the demo scopes every orders route; get-order loses its scopes here, the catalog has none
    assert k["routes_without_rate_limit"] == 5 and k["routes_without_scopes"] == 3
    assert k["routes_without_owner_rule"] == 1  # orders/get-order takes {order_id}
    exc = {e["id"]: e for e in doc["exceptions"]}
    assert exc["EXC-SOON"]["days_to_expiry"] == 10 and exc["EXC-SOON"]["expires_soon"]
    assert exc["EXC-OLD"]["state"] == "expired" and exc["EXC-DEMO-1"]["days_to_expiry"] in (29, 30)
    routes = {r["route"]: r for r in doc["routes"]}
    assert routes["orders/get-order"]["relaxed_controls"] == ["traffic.max_body_bytes"]
    assert routes["orders/get-order"]["controls"]["traffic.max_body_bytes"]["source"] == "exception:EXC-SOON"
    assert routes["orders/list-orders"]["meets_baseline"]  # expired exception: the class is enforced again
    assert [e["id"] for e in routes["orders/list-orders"]["expired_exceptions"]] == ["EXC-OLD"]
    assert routes["catalog/status"]["relaxed_controls"] == ["identity.required"]
    assert routes["orders/get-order"]["owner"] == "team-orders@example.com"
    assert "identity.required" in routes["orders/list-orders"]["owasp"]["API2:2023"]
    assert "API2:2023" not in routes["catalog/status"]["owasp"] or \
        "identity.required" not in routes["catalog/status"]["owasp"]["API2:2023"]
    assert routes["orders/list-orders"]["owasp"]["API9:2023"] == ["gateway.default_deny"]
    assert "anonymous callers are refused" in routes["orders/list-orders"]["owasp_why"]["identity.required"]
    assert "identity.required" not in routes["catalog/status"]["owasp_why"]  # waived: not credited
    assert "`identity.required`: anonymous callers are refused" in render.markdown(doc)
    assert routes["orders/create-order"]["inspection"][0].startswith("crs: OWASP_CRS/3.3.4 sha256:")  # the demo's CRS
    assert routes["orders/list-orders"]["inspection"] == []
    apis = {a["name"]: a for a in doc["apis"]}
    assert (apis["orders"]["coverage"], apis["catalog"]["coverage"]) == (66.7, 50.0)


def test_trend_against_the_previous_report(tmp_path: Path):
    compiled = compile_config(load_config(config_with_exceptions(tmp_path)), build_stages=False)
    previous = {"generated": "2026-01-01T00:00:00Z", "kpis": {"baseline_coverage": 80.0, "active_exceptions": 1}}
    doc = build(compiled, time.time(), previous=previous)
    assert doc["trend"]["kpis"]["baseline_coverage"] == {"previous": 80.0, "current": 60.0, "delta": -20.0}
    assert doc["trend"]["kpis"]["active_exceptions"]["delta"] == 1
    assert "-20 since previous" in render.markdown(doc)


async def test_report_from_a_real_audit_log_and_probe(demo: Demo, tmp_path: Path):
    port = demo.port
    token = demo.idp.mint("alice", ["orders:read"])
    assert (await request(port, "GET", "/orders/1", {"Authorization": f"Bearer {token}"}))[0] == 200
    assert (await request(port, "GET", "/orders/1"))[0] == 401
    assert (await request(port, "GET", "/nowhere/7"))[0] == 404
    assert (await request(port, "POST", "/catalog/products", body=b"{}"))[0] == 405
    probed = await probe(demo.config, demo.target, identity=demo.identity)
    audit = demo.config.parent / "audit.jsonl"
    sent = 4 + sum(r["result"] != "skip" for r in probed["results"])
    for _ in range(100):  # the audit writer is asynchronous
        if audit.exists() and len(audit.read_bytes().splitlines()) >= sent:
            break
        await asyncio.sleep(0.05)
    events = list(auditlog.requests(auditlog.read(audit)))
    compiled = compile_config(load_config(demo.config), build_stages=False)
    doc = build(compiled, time.time(), events=events, probe=probed)
    denials = doc["denials"]["by_control"]
    assert denials["gateway"] >= 2 and denials["identity"] >= 1 + 8 * 4  # probe forgeries are denials too
    assert denials["authz"] == 3  # the probe's token without scopes, on the three orders routes

    # the CLI leaves out what the probe's verified subject did (default bastion-probe); forged tokens carry no
    # verified subject and stay in (unless --probe-source names the CI runner's network)
    from bastion.cli_posture import dispatch
    from tests.posture.test_cli import parse

    out = tmp_path / "marked.json"
    assert dispatch(parse("report", "-c", str(demo.config), "--audit", str(audit), "--format", "json",
                          "-o", str(out))) == 0
    marked = json.loads(out.read_text())["denials"]
    assert "authz" not in marked["by_control"] and marked["by_control"]["identity"] == denials["identity"]
    assert marked["probe_requests"] > 0 and marked["requests"] + marked["probe_requests"] == doc["denials"]["requests"]
    assert dispatch(parse("report", "-c", str(demo.config), "--audit", str(audit), "--format", "json",
                          "-o", str(out), "--probe-source", "127.0.0.0/8")) == 0
    assert json.loads(out.read_text())["denials"]["by_control"] == {}  # everything came from 127.0.0.1
    assert dispatch(parse("report", "-c", str(demo.config), "--audit", str(audit), "--format", "json",
                          "-o", str(out), "--include-probe")) == 0
    assert json.loads(out.read_text())["denials"]["by_control"] == denials
    assert dispatch(parse("report", "-c", str(demo.config), "--audit", str(audit), "--probe-source", "x")) == 2
    assert doc["probe"]["summary"]["fail"] == 0 and not doc["probe"]["stale"]
    assert doc["kpis"]["probe_failures"] == 0
    assert {r["route"]: r["probe"]["fail"] for r in doc["routes"]} == dict.fromkeys(
        ["orders/list-orders", "orders/create-order", "orders/get-order", "catalog/list-products",
         "catalog/status"], 0)

    page = render.to_html(doc).decode()
    assert not re.search(r"<script|<link|src=|url\(|@import", page)  # self-contained, no JS
    assert 'data-kpi="baseline_coverage"><b>80.0%</b>' in page
    assert "EXC-DEMO-1" in page and "https://tickets.example.com/SEC-101" in page
    md = render.markdown(doc)
    assert "| Baseline coverage | 80.0% |" in md and "### catalog/status" in md
    assert json.loads(json.dumps(doc)) == doc  # JSON-ready


def test_report_cli_formats(tmp_path: Path, capsys):
    from bastion.cli_posture import dispatch
    from tests.posture.test_cli import parse

    config = config_with_exceptions(tmp_path)
    out = tmp_path / "r.json"
    assert dispatch(parse("report", "-c", str(config), "--format", "json", "-o", str(out))) == 0
    assert json.loads(out.read_text())["kpis"]["routes"] == 5
    assert dispatch(parse("report", "-c", str(config), "--previous", str(out))) == 0
    assert "no change" in capsys.readouterr().out
    assert dispatch(parse("report", "-c", str(config), "--format", "html", "-o", str(tmp_path / "r.html"))) == 0
    assert (tmp_path / "r.html").read_bytes().startswith(b"<!doctype html>")
    assert dispatch(parse("report", "-c", str(config), "--probe", str(out))) == 2  # not a probe result
