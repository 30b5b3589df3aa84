"""The running gateway: reload, admin endpoints, exceptions expiring under load, header hygiene."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from bastion.stages.base import Services
from tests.helpers import BASIC, legacy_tls_exception, request, running_gateway

pytestmark = pytest.mark.asyncio


async def test_admin_health_ready_metrics_config(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        admin = gw.admin_bound[1]
        await request(gw.bound[0][1], "GET", "/shop/items")
        await request(gw.bound[0][1], "GET", "/nowhere")
        assert (await request(admin, "GET", "/healthz"))[0] == 200
        assert (await request(admin, "GET", "/readyz"))[0] == 200
        status, _, body = await request(admin, "GET", "/metrics")
        text = body.decode()
        assert status == 200
        assert 'http_server_request_duration_seconds_count{bastion_api="shop"' in text
        assert 'bastion_decisions_total{control="gateway",outcome="deny",reason="unknown_route"} 1.0' in text
        assert "bastion_config_info{hash=" in text
        doc = json.loads((await request(admin, "GET", "/config"))[2])
        assert doc["routes"] == 2 and len(doc["config_hash"]) == 16


async def test_reload_swaps_config_and_a_bad_one_is_refused(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        port, admin = gw.bound[0][1], gw.admin_bound[1]
        path = tmp_path / "bastion.yaml"
        original = path.read_text()
        before = gw.gateway.compiled.config_hash
        path.write_text(original.replace("/items/{id}", "/things/{id}"))
        status, _, body = await request(admin, "POST", "/reload")
        assert status == 200 and json.loads(body)["reloaded"] is True
        assert (await request(port, "GET", "/shop/things/1"))[0] == 200
        assert (await request(port, "GET", "/shop/items/1"))[0] == 404
        assert gw.gateway.compiled.config_hash != before

        path.write_text(original.replace("owner: team-shop@example.com", "owner: x\n    bogus: 1"))
        status, _, body = await request(admin, "POST", "/reload")
        assert status == 422 and "unknown field" in json.loads(body)["message"]
        assert (await request(port, "GET", "/shop/things/1"))[0] == 200  # still the last good config


TLS_CLASS = legacy_tls_exception("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")


async def test_exception_stops_applying_at_its_instant_without_reload(tmp_path):
    expires = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    clock = {"now": expires - 5}
    services = Services(wall_clock=lambda: clock["now"])
    async with running_gateway(tmp_path, TLS_CLASS, services) as gw:
        port = gw.bound[0][1]
        assert (await request(port, "GET", "/ping"))[0] == 200  # waived over plaintext
        assert (await request(port, "GET", "/pong"))[0] == 403  # same class, no exception
        clock["now"] = expires - 0.001
        assert (await request(port, "GET", "/ping"))[0] == 200
        clock["now"] = expires
        status, _, body = await request(port, "GET", "/ping")
        assert status == 403 and json.loads(body)["detail"] == "This API must be called over HTTPS."
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    requests = [e for e in events if e["class_uid"] == 6003 and "request_id" in e["unmapped"]["bastion"]]
    allowed = [e for e in requests if e["unmapped"]["bastion"]["route"] == "ping" and e["action_id"] == 1]
    assert allowed and allowed[0]["unmapped"]["bastion"]["exceptions"] == ["EXC-42"]
    denied = [e for e in requests if e["action_id"] == 2]
    assert {e["unmapped"]["bastion"]["reason"] for e in denied} == {"tls_required"}
    assert any(e["policy"]["uid"].startswith("class:internal/legacy/ping/transport.tls") for e in denied)


HYGIENE = BASIC.replace("admin: {address: 127.0.0.1, port: 0}",
                        "admin: {address: 127.0.0.1, port: 0}\n  trusted_proxies: [127.0.0.0/8]")


async def test_identity_headers_are_stripped_and_forwarding_is_rebuilt(tmp_path):
    async with running_gateway(tmp_path, HYGIENE) as gw:
        status, headers, body = await request(gw.bound[0][1], "GET", "/shop/items?q=1", {
            "X-Bastion-Consumer": "admin", "X-User-Id": "1", "X-Forwarded-User": "root",
            "X-Consumer-Name": "evil", "X-Forwarded-For": "198.51.100.7", "X-Request-ID": "from-proxy-1",
            "Connection": "x-drop-me", "X-Drop-Me": "1", "Keep-Alive": "timeout=5", "Proxy-Authorization": "x",
        })
        seen = json.loads(body)["headers"]
        for name in ("x-bastion-consumer", "x-user-id", "x-forwarded-user", "x-consumer-name", "x-drop-me",
                     "keep-alive", "proxy-authorization"):
            assert name not in seen, name
        assert seen["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
        assert seen["forwarded"] == "for=198.51.100.7;proto=http"
        assert seen["x-request-id"] == "from-proxy-1" == headers["x-request-id"]
        assert json.loads(body)["target"] == "/shop/items?q=1"
        assert headers["traceparent"] == seen["traceparent"]


async def test_untrusted_peer_cannot_choose_its_address_or_request_id(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        _, headers, body = await request(gw.bound[0][1], "GET", "/shop/items", {
            "X-Forwarded-For": "198.51.100.7", "X-Request-ID": "chosen"})
        seen = json.loads(body)["headers"]
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-request-id"] != "chosen"


async def test_query_credentials_never_reach_the_upstream(tmp_path):
    """A route that accepts `?api_key=` still strips it before forwarding (keys end up in upstream logs)."""
    from bastion.stages.identity import new_api_key

    key, line = new_api_key("kiosk")
    config = BASIC.replace("classes:", f"consumers:\n  - name: kiosk\n    credentials:\n      {line}\nclasses:")
    config = config.replace("identity: {required: false}",
                            "identity: {required: true, methods: [api_key], allow_query_api_key: true}")
    async with running_gateway(tmp_path, config) as gw:
        status, _, body = await request(gw.bound[0][1], "GET", f"/shop/items?a=1&api_key={key}&b=2")
        assert status == 200
        assert json.loads(body)["target"] == "/shop/items?a=1&b=2"
        assert key not in body.decode()


async def test_drift_from_the_approved_file_raises_an_alert(tmp_path):
    approved = BASIC.replace("{upstream}", "http://127.0.0.1:9").replace(
        "- {name: get-item, path: \"/{id}\", methods: [GET, PUT]}", "")
    (tmp_path / "approved.yaml").write_text(approved)
    config = BASIC.replace("admin: {address: 127.0.0.1, port: 0}",
                           "admin: {address: 127.0.0.1, port: 0}\n  drift: {approved: approved.yaml, interval: 50ms}\n"
                           "  audit: {sinks: [{type: file, path: audit.jsonl}]}")
    async with running_gateway(tmp_path, config) as gw:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if gw.metrics.registry.get_sample_value("bastion_config_drift") == 1.0:
                break
        assert gw.metrics.registry.get_sample_value("bastion_config_drift") == 1.0
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(e["class_uid"] == 2004 and "drift" in json.dumps(e) for e in events)


RATE_KEYS = """
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
  admin: {enabled: false}
  trusted_proxies: [127.0.0.1/32]
  limits: {max_rate_limit_keys: KEYS}
classes:
  open:
    identity: {required: false}
    input: {contract: "off", inspection: "off"}
    traffic: {rate_limits: [{name: per-client, algorithm: sliding_window, limit: 1, window: 60s, key: client_ip}]}
apis:
  - name: shop
    owner: team-shop@example.com
    class: open
    upstream: {upstream}
    routes: [{name: items, path: /items, methods: [GET]}]
"""


@pytest.mark.parametrize(("keys", "first_again"), [(101, 429), (100, 200)])
async def test_the_memory_state_holds_max_rate_limit_keys_counters(tmp_path, keys, first_again):
    # 101 client addresses, one request each: a table of 101 still counts the first; one of 100 let it go
    async with running_gateway(tmp_path, RATE_KEYS.replace("KEYS", str(keys))) as runtime:
        port = runtime.bound[0][1]
        for i in range(101):
            assert (await request(port, "GET", "/items", {"X-Forwarded-For": f"198.51.100.{i}"}))[0] == 200
        assert (await request(port, "GET", "/items", {"X-Forwarded-For": "198.51.100.0"}))[0] == first_again
