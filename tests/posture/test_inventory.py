"""`bastion inventory`: consumers and last use per route, idle routes, undeclared paths folded into templates."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bastion.cli_posture import dispatch
from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.posture import auditlog, inventory
from tests.posture.conftest import audit_event, demo_config
from tests.posture.test_cli import parse

DAY = 86400


@pytest.mark.parametrize(("path", "folded"), [
    ("/v1/users/42/orders", "/v1/users/{n}/orders"),
    ("/files/3f2a9c1d0b7e/raw", "/files/{hex}/raw"),
    ("/a/123e4567-e89b-12d3-a456-426614174000", "/a/{uuid}"),
    ("/api/deadbeef?x=1", "/api/deadbeef"),  # letters only: a word, not an id
    ("/orders/v2", "/orders/v2"),
    ("/", "/"),
])
def test_template(path: str, folded: str):
    assert inventory.template(path) == folded


def _events(now: float) -> list[dict]:
    return [
        audit_event("/orders/1", api="orders", route="get-order", caller="billing", time=now - 2 * DAY),
        audit_event("/orders/2", api="orders", route="get-order", caller="shop", time=now - 1 * DAY),
        audit_event("/orders/3", api="orders", route="get-order", decision="deny", reason="jwt_expired",
                    control="identity", time=now - DAY),
        audit_event("/orders/", api="orders", route="list-orders", caller="billing", time=now - 120 * DAY),
        audit_event("/v1/orders/17", decision="deny", reason="unknown_route", control="gateway",
                    time=now - 30 * DAY, ip="10.1.1.1"),
        audit_event("/v1/orders/99", decision="deny", reason="unknown_route", control="gateway",
                    time=now - 3 * DAY, ip="10.1.1.2"),
        audit_event("/v1/orders/99", decision="deny", reason="unknown_route", control="gateway",
                    time=now - 2 * DAY, ip="10.1.1.2", caller="legacy-app"),
        audit_event("/catalog/products", method="DELETE", decision="deny", reason="method_not_allowed",
                    control="gateway", time=now - DAY, ip="10.9.9.9"),
    ]


def test_inventory(tmp_path: Path):
    config, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9")
    compiled = compile_config(load_config(config), build_stages=False)
    now = time.time()
    events = list(auditlog.requests(_events(now)))
    doc = inventory.build(compiled, events, now)
    routes = {r["route"]: r for r in doc["routes"]}
    got = routes["orders/get-order"]
    # the denied request had no verified caller: it is known by its address, not as "anonymous"
    assert (got["requests"], got["denied"], got["consumers"], got["idle"]) == (
        3, 1, ["10.0.0.1", "billing", "shop"], False)
    anonymous = audit_event("/catalog/status", api="catalog", route="status", time=now - DAY, ip="192.0.2.7")
    anonymous["actor"] = {"user": {"name": "anonymous", "type_id": 0}}  # as the gateway writes it
    events = list(auditlog.requests([*_events(now), anonymous]))
    doc = inventory.build(compiled, events, now)
    routes = {r["route"]: r for r in doc["routes"]}
    assert got["owner"] == "team-orders@example.com" and got["class"] == "partner"
    assert routes["orders/list-orders"]["idle"]  # last call 120 days ago
    assert routes["catalog/status"]["consumers"] == ["192.0.2.7"]
    assert doc["idle_routes"] == ["orders/list-orders", "orders/create-order", "catalog/list-products"]
    shadow = doc["shadow"]
    assert shadow[0]["request"] == "GET /v1/orders/{n}" and shadow[0]["count"] == 3
    assert shadow[0]["callers"] == ["10.1.1.1", "10.1.1.2", "legacy-app"]
    assert shadow[0]["first_seen"] < shadow[0]["last_seen"]
    assert shadow[1]["request"] == "DELETE /catalog/products (undeclared method)"
    assert {a["name"]: a["idle_routes"] for a in doc["apis"]} == {"orders": 2, "catalog": 1}
    assert "review for decommissioning" in inventory.text(doc)

    assert inventory.build(compiled, events, now, idle_days=200)["idle_routes"] == [
        "orders/create-order", "catalog/list-products"]


def test_inventory_cli(tmp_path: Path, capsys):
    config, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9")
    audit = tmp_path / "audit.jsonl"
    audit.write_text("\n".join(json.dumps(e) for e in _events(time.time())) + "\nnot json\n")
    assert dispatch(parse("inventory", "-c", str(config), "--audit", str(audit), "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["shadow"][0]["count"] == 3
    assert dispatch(parse("inventory", "-c", str(config), "--audit", str(tmp_path / "missing"))) == 2


def test_inventory_memory_is_bounded_whatever_the_audit_log_holds(tmp_path: Path):
    config, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9")
    compiled = compile_config(load_config(config), build_stages=False)
    now = time.time()
    flood = (auditlog.RequestEvent(now, f"/scan-{i}/x", "GET", None, None, "deny", "unknown_route", "routing",
                                   f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", None)
             for i in range(inventory.MAX_SHADOWS + 50))
    many_callers = (auditlog.RequestEvent(now, "/v1/orders/1", "GET", None, None, "deny", "unknown_route",
                                          "routing", f"10.9.{i // 256 % 256}.{i % 256}", None)
                    for i in range(inventory.MAX_TRACKED_CALLERS + 10))
    doc = inventory.build(compiled, [*many_callers, *flood], now)
    assert len(doc["shadow"]) == inventory.MAX_SHADOWS
    assert doc["shadow_dropped"] == 51  # "/v1/orders/{n}" took the first place
    orders = next(s for s in doc["shadow"] if s["request"] == "GET /v1/orders/{n}")
    assert orders["count"] == inventory.MAX_TRACKED_CALLERS + 10
    assert orders["caller_count"] == inventory.MAX_TRACKED_CALLERS
