"""Operators act through the admin API: revoke and lift credentials, block and unblock callers."""

from __future__ import annotations

import json

import pytest

from bastion.demo.idp import start_idp
from tests.helpers import LOOPBACK_GATEWAY, request, running_gateway

pytestmark = pytest.mark.asyncio

CONFIG = LOOPBACK_GATEWAY + """
classes:
  partner:
    identity: {required: true, methods: [jwt]}
providers:
  jwt:
    - {name: idp, issuer: ISSUER, audiences: [api://demo], algorithms: [ES256, RS256], jwks_uri: ISSUER/jwks.json}
apis:
  - {name: orders, owner: o@example.com, class: partner, upstream: "{upstream}",
     routes: [{name: get, path: "/orders/{id}", methods: [GET]}]}
"""


def post(admin: int, path: str, doc: dict) -> object:
    return request(admin, "POST", path, {"Content-Type": "application/json"}, json.dumps(doc).encode())


async def test_revoke_subject_and_lift_through_the_admin_api(tmp_path):
    idp = await start_idp("127.0.0.1", 0)
    try:
        async with running_gateway(tmp_path, CONFIG.replace("ISSUER", idp.issuer)) as gw:
            port, admin = gw.bound[0][1], gw.admin_bound[1]
            auth = {"Authorization": f"Bearer {idp.mint('alice', ['orders:read'], 'api://demo')}"}
            assert (await request(port, "GET", "/orders/1", auth))[0] == 200
            status, _, body = await post(admin, "/revocations", {"kind": "sub", "value": "alice", "seconds": 600})
            assert status == 200, body
            assert (await request(port, "GET", "/orders/1", auth))[0] == 401  # the cached token too
            listed = json.loads((await request(admin, "GET", "/revocations"))[2])["revocations"]
            assert any(r["value"] == "alice" for r in listed)
            assert (await post(admin, "/revocations", {"kind": "everything", "value": "x", "seconds": 1}))[0] == 400
            assert json.loads((await post(admin, "/revocations/lift", {"kind": "sub", "value": "alice"}))[2])["lifted"]
            assert (await request(port, "GET", "/orders/1", auth))[0] == 200
            assert (await post(admin, "/ssf/events", {}))[0] == 404  # no transmitter configured
    finally:
        await idp.close()


async def test_block_and_unblock_a_source_address(tmp_path):
    config = CONFIG.replace("identity: {required: true, methods: [jwt]}", "identity: {required: false, methods: []}")
    async with running_gateway(tmp_path, config.replace("ISSUER", "http://127.0.0.1:9")) as gw:
        port, admin = gw.bound[0][1], gw.admin_bound[1]
        assert (await request(port, "GET", "/orders/1"))[0] == 200
        assert (await post(admin, "/blocks", {"kind": "ip", "key": "127.0.0.1", "seconds": 60}))[0] == 200
        status, headers, _ = await request(port, "GET", "/orders/1")
        assert status == 403 and int(headers["retry-after"]) > 0
        blocks = json.loads((await request(admin, "GET", "/blocks"))[2])["blocks"]
        assert any(b["key"] == "127.0.0.1" for b in blocks)
        assert (await post(admin, "/blocks", {"kind": "ip", "key": "x"}))[0] == 400
        assert json.loads((await post(admin, "/blocks/lift", {"kind": "ip", "key": "127.0.0.1"}))[2])["lifted"]
        assert (await request(port, "GET", "/orders/1"))[0] == 200
