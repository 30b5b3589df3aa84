"""WebSocket behind the gateway: a real `websockets` client and server, the pipeline at the upgrade, limits
and credential expiry/revocation mid-session, and strict framing for every other route."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bastion.demo.idp import start_idp
from bastion.server.app import Runtime
from bastion.stages.base import Services
from bastion.stages.identity.revocation import MemoryRevocationList
from tests.helpers import FILE_AUDIT_GATEWAY_FORMAT, exchange, parse_response

CONFIG = FILE_AUDIT_GATEWAY_FORMAT + """
classes:
  users:
    identity: {{required: true, methods: [jwt]}}
providers:
  jwt:
    - {{name: idp, issuer: "{issuer}", audiences: [api://demo], jwks_uri: "{issuer}/jwks.json"}}
apis:
  - name: chat
    owner: team-chat@example.com
    class: users
    upstream: http://127.0.0.1:{upstream}
    routes:
      - name: room
        path: /room
        methods: [GET]
        websocket: {{max_message_bytes: 1KiB, messages_per_second: 5, burst: 5, revocation_interval: 200ms}}
        policy: {{authz: {{scopes: ["orders:read"]}}}}
      - {{name: quiet, path: /quiet, methods: [GET], websocket: {{idle_timeout: 800ms}}}}
      - {{name: plain, path: /plain, methods: [GET]}}
"""


async def _upstream(websocket) -> None:
    """Echo, plus `whoami` (the handshake headers it got) and `big` (a message over the gateway's limit)."""
    headers = {k.lower(): v for k, v in websocket.request.headers.raw_items()}
    with contextlib.suppress(ConnectionClosed):  # the gateway may end the session: that is the test
        async for message in websocket:
            if message == "whoami":
                await websocket.send(json.dumps({"path": websocket.request.path, "headers": headers}))
            elif message == "big":
                await websocket.send("x" * 4096)
            else:
                await websocket.send(message)


@pytest.fixture
async def stack(tmp_path):
    idp = await start_idp()
    upstream = await serve(_upstream, "127.0.0.1", 0, compression=None)
    port = upstream.sockets[0].getsockname()[1]
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(issuer=idp.issuer, upstream=port)))
    revocations = MemoryRevocationList()
    runtime = Runtime(path, services=Services(revocations=revocations))
    await runtime.start()
    try:
        yield runtime.bound[0][1], idp, revocations, tmp_path, runtime.metrics.registry
    finally:
        await runtime.stop(drain_timeout=0.5)
        upstream.close()
        await idp.close()


def _auth(idp, **claims) -> dict[str, str]:
    return {"Authorization": f"Bearer {idp.mint('alice', ['orders:read'], **claims)}"}


async def _closed(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def test_the_upgrade_runs_the_pipeline_then_messages_flow(stack):
    port, idp, _, tmp_path, _ = stack
    url = f"ws://127.0.0.1:{port}/room"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url)
    assert refused.value.response.status_code == 401  # no credential: never forwarded
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers={"Authorization": f"Bearer {idp.mint('alice', [])}"})
    assert refused.value.response.status_code == 403  # no scope
    async with connect(url, additional_headers={**_auth(idp), "X-User-Id": "root"},
                       subprotocols=["chat.v1"], compression="deflate") as ws:
        assert ws.subprotocol is None  # the upstream chose none of those offered
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
        await ws.send(["frag", "mented"])  # one message in three frames
        assert await ws.recv() == "fragmented"
        await ws.send("whoami")
        seen = json.loads(await ws.recv())
        assert seen["path"] == "/room"
        assert seen["headers"]["x-bastion-subject"] == "alice" and "x-user-id" not in seen["headers"]
        assert "authorization" not in seen["headers"]  # the credential stops at the gateway
        assert "sec-websocket-extensions" not in seen["headers"]  # no compression: frames stay readable
        assert ws.response.headers["x-request-id"]
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)  # the gateway answers pings
    await asyncio.sleep(0.3)
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    session = [e for e in events if e.get("unmapped", {}).get("bastion", {}).get("status") == 101]
    assert session and session[-1]["unmapped"]["bastion"]["subject"] == "alice"
    assert session[-1]["unmapped"]["bastion"]["decisions"][-1]["control"] == "websocket"


async def test_a_message_over_the_limit_closes_with_1009_either_way(stack):
    port, idp, _, _, _ = stack
    async with connect(f"ws://127.0.0.1:{port}/room", additional_headers=_auth(idp), max_size=None) as ws:
        await ws.send("y" * 2048)
        code, _ = await _closed(ws)
        assert code == 1009
    async with connect(f"ws://127.0.0.1:{port}/room", additional_headers=_auth(idp), max_size=None) as ws:
        await ws.send("big")
        code, _ = await _closed(ws)
        assert code == 1009


async def test_the_message_rate_is_limited_with_1008(stack):
    port, idp, _, _, _ = stack
    async with connect(f"ws://127.0.0.1:{port}/room", additional_headers=_auth(idp)) as ws:
        for n in range(20):
            try:
                await ws.send(f"m{n}")
            except ConnectionClosed:
                break
        assert await _closed(ws) == (1008, "message rate exceeded")


async def test_an_idle_session_is_closed_with_1001(stack):
    port, idp, _, _, _ = stack
    async with connect(f"ws://127.0.0.1:{port}/quiet", additional_headers=_auth(idp), ping_interval=None) as ws:
        started = time.monotonic()
        assert await _closed(ws) == (1001, "idle timeout")
        assert 0.7 < time.monotonic() - started < 5


async def test_an_expiring_credential_ends_the_session_with_1008(stack):
    port, idp, _, _, _ = stack
    async with connect(f"ws://127.0.0.1:{port}/room", additional_headers=_auth(idp, exp=int(time.time()) + 2)) as ws:
        await ws.send("still here")
        assert await ws.recv() == "still here"
        assert await _closed(ws) == (1008, "credential expired")


async def test_a_revoked_credential_ends_the_session_with_1008(stack):
    port, idp, revocations, tmp_path, _ = stack
    async with connect(f"ws://127.0.0.1:{port}/room", additional_headers=_auth(idp)) as ws:
        await ws.send("one")
        assert await ws.recv() == "one"
        await revocations.revoke("sub", "alice", time.time() + 60)  # e.g. a CAEP session-revoked event
        assert await _closed(ws) == (1008, "credential revoked")
    await asyncio.sleep(0.3)
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    reasons = [d["reason"] for e in events for d in e.get("unmapped", {}).get("bastion", {}).get("decisions", [])
               if d["control"] == "websocket"]
    assert "websocket_credential_revoked" in reasons


async def test_a_client_that_vanishes_ends_its_session(stack):
    port, idp, _, _, registry = stack
    ws = await connect(f"ws://127.0.0.1:{port}/room", additional_headers=_auth(idp))
    await ws.send("hi")
    assert await ws.recv() == "hi"
    ws.transport.abort()  # no close frame, no FIN handshake
    deadline = time.monotonic() + 5
    while registry.get_sample_value("bastion_websocket_sessions") != 0:
        assert time.monotonic() < deadline, "the session outlived its client"
        await asyncio.sleep(0.05)


async def test_framing_stays_strict_on_other_routes(stack):
    port, idp, _, _, _ = stack
    token = _auth(idp)["Authorization"]
    head = ("GET /plain HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Authorization: {token}\r\n\r\n")
    raw = await exchange(port, head.encode() + b"\x81\x85\x00\x00\x00\x00hello")
    assert parse_response(raw)[0] == 400 and b"connection: close" in raw.lower()
    h2c = "GET /room HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    assert parse_response(await exchange(port, h2c.encode()))[0] == 400  # other upgrades: refused as before
    old = head.replace("/plain", "/room").replace("Version: 13", "Version: 8")
    status, headers, _ = parse_response(await exchange(port, old.encode()))
    assert status == 426 and headers["sec-websocket-version"] == "13"
    plain = f"GET /plain HTTP/1.1\r\nHost: gw\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    status, _, body = parse_response(await exchange(port, plain.encode()))
    assert status == 426 and b"WebSocket" in body  # forwarded: the upstream (a WebSocket server) says so itself


async def test_an_upstream_that_refuses_the_upgrade_is_a_502(tmp_path):
    async def no_ws(websocket) -> None:
        pass

    idp = await start_idp()

    def refuse(connection, request):
        return connection.respond(403, "no\n")

    upstream = await serve(no_ws, "127.0.0.1", 0, process_request=refuse)
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(issuer=idp.issuer, upstream=upstream.sockets[0].getsockname()[1])))
    runtime = Runtime(path)
    await runtime.start()
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{runtime.bound[0][1]}/room", additional_headers=_auth(idp))
        assert refused.value.response.status_code == 502
    finally:
        await runtime.stop(drain_timeout=0.5)
        upstream.close()
        await idp.close()


async def test_a_pool_skips_a_dead_target_for_the_session(tmp_path):
    from tests.helpers import free_port

    idp = await start_idp()
    upstream = await serve(_upstream, "127.0.0.1", 0, compression=None)
    alive = upstream.sockets[0].getsockname()[1]
    dead = free_port()
    path = tmp_path / "bastion.yaml"
    config = CONFIG.format(issuer=idp.issuer, upstream=alive).replace(
        f"upstream: http://127.0.0.1:{alive}",
        f"upstream: [http://127.0.0.1:{dead}, http://127.0.0.1:{alive}]\n"
        "    load_balancing: {outlier: {consecutive_connect_failures: 1, base_ejection: 30s}}")
    path.write_text(textwrap.dedent(config))
    runtime = Runtime(path)
    await runtime.start()
    try:
        for _ in range(3):  # round robin would send one of these to the dead target: it is skipped, then ejected
            async with connect(f"ws://127.0.0.1:{runtime.bound[0][1]}/room", additional_headers=_auth(idp)) as ws:
                await ws.send("whoami")
                assert json.loads(await ws.recv())["path"] == "/room"
        [pool] = runtime.gateway.target_pools.values()
        assert not pool.targets[0].state.available(time.monotonic())
    finally:
        await runtime.stop(drain_timeout=0.5)
        upstream.close()
        await idp.close()
