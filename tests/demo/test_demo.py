"""`bastion demo` works as its printed instructions promise (on free ports)."""

from __future__ import annotations

import asyncio
import json

import pytest

from bastion.commands import explain
from bastion.demo.run import run_demo
from tests.helpers import free_port, request

pytestmark = pytest.mark.asyncio


async def test_demo_allows_denies_and_honours_its_exception(capsys):
    port, idp_port, up_port, admin_port = free_port(), free_port(), free_port(), free_port()
    ready, stop, info = asyncio.Event(), asyncio.Event(), {}
    task = asyncio.create_task(run_demo(port, idp_port=idp_port, upstream_port=up_port, admin_port=admin_port,
                                        ready=ready, stop=stop, info=info))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        printed = capsys.readouterr().out
        assert f"curl -s http://127.0.0.1:{port}/orders/42" in printed
        _, _, token = await request(idp_port, "GET", "/token?user=alice")
        token = token.decode().strip()

        status, _, body = await request(port, "GET", "/orders/42",
                                        {"Authorization": f"Bearer {token}", "X-User-Id": "root"})
        seen = json.loads(body)["headers"]
        assert status == 200 and seen["x-bastion-subject"] == "alice" and "x-user-id" not in seen
        assert "authorization" not in seen  # the credential stops at the gateway

        status, headers, body = await request(port, "GET", "/orders/42")
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="bastion"'
        assert json.loads(body)["status"] == 401

        forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."
        status, headers, _ = await request(port, "GET", "/orders/42", {"Authorization": f"Bearer {forged}"})
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]

        _, _, bob = await request(idp_port, "GET", "/token?user=bob")
        status, headers, _ = await request(port, "POST", "/orders/", {
            "Authorization": f"Bearer {bob.decode().strip()}", "Content-Type": "application/json"}, b'{"item": 1}')
        assert status == 403 and 'error="insufficient_scope", scope="orders:write"' in headers["www-authenticate"]
        status, _, _ = await request(port, "POST", "/orders/", {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"}, b'{"item": 1}')
        assert status == 200  # alice has orders:write

        assert (await request(port, "GET", "/admin/secrets"))[0] == 404
        assert (await request(port, "GET", "/catalog/status"))[0] == 200  # EXC-DEMO-1
        assert (await request(port, "GET", "/catalog/products"))[0] == 401  # same API, no exception

        assert explain(str(info["config"]), "catalog/status") == 0
        assert "exception:EXC-DEMO-1" in capsys.readouterr().out

        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        attack = b'{"item": 1, "note": "1\' UNION SELECT password FROM users--"}'
        status, _, body = await request(port, "POST", "/orders/", auth, attack)
        assert status == 400 and json.loads(body)["status"] == 400  # the CRS, at paranoia 1
        assert explain(str(info["config"]), "orders/create-order") == 0
        assert "inspection: crs: OWASP_CRS/3.3.4" in capsys.readouterr().out
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
