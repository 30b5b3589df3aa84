"""The admin API: authentication, audit of every action, policies, report and dashboard."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.helpers import BASIC, request, running_gateway

pytestmark = pytest.mark.asyncio

TOKEN = "admin-token-for-tests-only"
AUTH = BASIC.replace(
    "admin: {address: 127.0.0.1, port: 0}",
    "admin:\n    address: 127.0.0.1\n    port: 0\n"
    f"    auth: {{token_sha256: [{hashlib.sha256(TOKEN.encode()).hexdigest()}]}}\n"
    "  audit: {sinks: [{type: file, path: audit.jsonl}]}",
)


async def test_admin_refuses_unauthenticated_callers_and_audits_every_action(tmp_path):
    async with running_gateway(tmp_path, AUTH) as gw:
        admin = gw.admin_bound[1]
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


async def test_report_inventory_and_dashboard_from_the_running_gateway(tmp_path):
    async with running_gateway(tmp_path, AUTH) as gw:
        good = {"Authorization": f"Bearer {TOKEN}"}
        port, admin = gw.bound[0][1], gw.admin_bound[1]
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


async def test_admin_off_loopback_needs_auth(tmp_path):
    from bastion.config.loader import ConfigError, load_config

    path = tmp_path / "b.yaml"
    path.write_text(BASIC.replace("admin: {address: 127.0.0.1, port: 0}", "admin: {address: 0.0.0.0, port: 0}")
                    .replace("{upstream}", "http://127.0.0.1:9"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "needs `auth`" in str(info.value)


async def test_admin_answers_bad_input_with_4xx(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        admin = gw.admin_bound[1]
        status, _, _ = await request(admin, "POST", "/blocks", {"Content-Type": "application/json"}, b"x" * (1024 * 1024 + 1))
        assert status == 413
        for body in (b"{not json", b"[]", b'{"kind": "ip", "key": "1.2.3.4", "seconds": "soon"}'):
            status, headers, _ = await request(admin, "POST", "/blocks", {"Content-Type": "application/json"}, body)
            assert status == 400 and headers["content-type"] == "application/problem+json"
        assert (await request(admin, "POST", "/revocations", {}, b"{}"))[0] == 400
        assert (await request(admin, "GET", "/reload"))[0] == 405
