"""Readiness tells the truth: /readyz is 503 with the reason while Redis is down or JWKS never arrived;
/healthz (liveness) stays 200; `bastion_ready` and `bastion_not_ready_reason` say the same."""

from __future__ import annotations

import asyncio
import json

from tests.helpers import LOOPBACK_GATEWAY, free_port, request, running_gateway

CONFIG = LOOPBACK_GATEWAY + """
  state: STATE
classes:
  open:
    identity: {required: false}
    traffic: {rate_limits: [{name: per-client, limit: 100, window: 1m, key: client_ip}]}
apis:
  - name: shop
    owner: team-shop@example.com
    class: open
    upstream: "{upstream}"
    routes: [{name: items, path: /items, methods: [GET]}]
"""

JWKS = LOOPBACK_GATEWAY + """
providers:
  jwt: [{name: idp, issuer: "https://idp.example", audiences: [shop], jwks_uri: "http://127.0.0.1:PORT/jwks"}]
classes:
  internal: {identity: {required: true, methods: [jwt]}}
apis:
  - name: shop
    owner: team-shop@example.com
    class: internal
    upstream: "{upstream}"
    routes: [{name: items, path: /items, methods: [GET]}]
"""


async def _ready(admin: int) -> tuple[int, dict]:
    status, _, body = await request(admin, "GET", "/readyz")
    return status, json.loads(body)


async def _wait_status(admin: int, wanted: int, timeout: float = 5.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, doc = await _ready(admin)
        if status == wanted or loop.time() > deadline:
            assert status == wanted, doc
            return doc
        await asyncio.sleep(0.1)


async def test_readyz_follows_redis_down_and_back(tmp_path, redis_server):
    async with running_gateway(tmp_path, CONFIG.replace("STATE", redis_server.url)) as gw:
        admin = gw.admin_bound[1]
        assert (await _ready(admin))[0] == 200
        redis_server.stop()
        doc = await _wait_status(admin, 503)  # no traffic needed: the probe pings once a second
        assert doc["status"] == "not ready"
        assert [r.split(":")[0] for r in doc["reasons"]] == ["state_unavailable"]
        assert (await request(admin, "GET", "/healthz"))[0] == 200  # alive: do not restart it
        metrics = (await request(admin, "GET", "/metrics"))[2].decode()
        assert "bastion_ready 0.0" in metrics
        assert 'bastion_not_ready_reason{reason="state_unavailable"} 1.0' in metrics
        redis_server.start()
        assert (await _wait_status(admin, 200))["reasons"] == []
        metrics = (await request(admin, "GET", "/metrics"))[2].decode()
        assert 'bastion_not_ready_reason{reason="state_unavailable"} 0.0' in metrics


async def test_readyz_is_not_ready_while_jwks_was_never_fetched(tmp_path):
    async with running_gateway(tmp_path, JWKS.replace("PORT", str(free_port()))) as gw:
        status, doc = await _ready(gw.admin_bound[1])
        assert status == 503 and doc["reasons"][0].startswith("jwks_missing:")


OPA = LOOPBACK_GATEWAY + """
classes:
  open:
    identity: {required: false}
    authz: {opa: {url: "http://127.0.0.1:PORT", path: bastion/allow, timeout: 200ms, on_error: closed}}
apis:
  - name: shop
    owner: team-shop@example.com
    class: open
    upstream: "{upstream}"
    routes: [{name: items, path: /items, methods: [GET]}]
"""


async def _opa_stub(port: int) -> asyncio.Server:
    """Answers OPA's health API and every decision with `true`."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                body = b'{"result": true}'
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_readyz_follows_the_policy_engine(tmp_path):
    port = free_port()
    async with running_gateway(tmp_path, OPA.replace("PORT", str(port))) as gw:
        admin = gw.admin_bound[1]
        doc = await _wait_status(admin, 503)
        assert [r.split(":")[0] for r in doc["reasons"]] == ["policy_engine_unavailable"]
        assert (await request(gw.bound[0][1], "GET", "/items"))[0] == 503  # what the node would answer
        stub = await _opa_stub(port)
        try:
            await _wait_status(admin, 200)
            assert (await request(gw.bound[0][1], "GET", "/items"))[0] == 200
        finally:
            stub.close()
            await stub.wait_closed()


def test_the_state_probe_ends_even_when_redis_py_swallows_its_cancellation(redis_server):
    """On uvloop, redis-py can swallow a cancellation that lands while a PING's reply is read (the call returns
    normally; measured: most cancellations at some points). The probe must end anyway and `close()` return: a
    probe that kept pinging once held a worker's shutdown forever with its listener still accepting requests."""
    import uvloop

    from bastion.server.readiness import StateProbe
    from bastion.state import open_state

    async def closes() -> list[bool]:
        state = open_state(redis_server.url)
        ended = []
        try:
            for i in range(60):
                probe = StateProbe(state, interval=0.0)  # back-to-back PINGs: a cancel lands mid-reply often
                probe.start()
                for _ in range(i % 6):
                    await asyncio.sleep(0)
                await asyncio.wait_for(asyncio.shield(probe.close()), 5)  # the old probe: TimeoutError here
                ended.append(probe._task is not None and probe._task.done())
        finally:
            await state.close()
        return ended

    assert uvloop.run(closes()) == [True] * 60
