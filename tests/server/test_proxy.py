"""Gateway.handle as values, without sockets: each way a request can end (routed or not, refused, forwarded,
failed upstream, a gateway bug) gives the answer the client sees and one audit record saying why."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.server.http1 import Http1Connection, ServerLimits
from bastion.server.metrics import Metrics
from bastion.server.proxy import Forwarded, Gateway, Problem, Routed
from bastion.server.upstream import UpstreamConnection, UpstreamPool
from bastion.stages.base import Services
from tests.helpers import parse_response
from tests.server.memory import MemoryTransport

CONFIG = """\
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
  admin: {enabled: false}
classes:
  open:
    identity: {required: false}
    input: {contract: "off", inspection: "off"}  # nothing reads the body: it is streamed to the upstream
    response: {cors: {allow_origins: ["https://app.example"]}}
apis:
  - name: shop
    owner: team-shop@example.com
    class: open
    upstream: http://127.0.0.1:9
    base_path: /shop
    routes:
      - {name: list-items, path: /items, methods: [GET, POST], policy: {traffic: {max_body_bytes: 8}}}
"""
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Audit:
    """Records the one event per request the gateway emits."""

    enabled = True

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def request(self, ctx: Any, status: int, deny: Any, seconds: float, exceptions: tuple[str, ...],
                upstream_status: int | None) -> None:
        self.events.append({"status": status, "reason": deny.reason if deny else None, "route": ctx.route,
                            "upstream_status": upstream_status, "records": [r.control for r in ctx.records],
                            "log_detail": deny.log_detail if deny else None, "request_id": ctx.request_id})


def gateway(tmp_path: Path) -> tuple[Gateway, Audit]:
    path = tmp_path / "bastion.yaml"
    path.write_text(CONFIG)
    audit = Audit()
    return Gateway(compile_config(load_config(path)), Services(audit=audit), Metrics()), audit


def answering_upstream(pool: UpstreamPool, requests: list[bytes]) -> None:
    """A pooled upstream connection that records the request and answers on the next loop iteration."""
    loop = asyncio.get_running_loop()
    conn = UpstreamConnection(pool)

    def received(data: bytes) -> None:
        requests.append(data)
        complete = b"transfer-encoding: chunked" not in requests[0] or data.endswith(b"0\r\n\r\n")
        if complete:  # the whole request is there: answer it
            loop.call_soon(conn.data_received, ANSWER)

    transport = MemoryTransport()
    transport.write = received  # type: ignore[method-assign]
    conn.connection_made(transport)
    pool._open += 1
    conn.reusable = True
    pool.release(conn)


async def ask(gw: Gateway, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    conn = Http1Connection(gw.handle, ServerLimits(), set(), gw.on_protocol_error)
    transport = MemoryTransport()
    conn.connection_made(transport)
    conn.data_received(raw)
    for _ in range(50):
        await asyncio.sleep(0)
        if transport.out and (transport.closed or not raw.startswith(b"POST")):
            break
    await asyncio.sleep(0.01)
    return parse_response(transport.take())


# (name, request, status, audited reason, whether the upstream saw it)
CASES = [
    ("forwarded", b"GET /shop/items HTTP/1.1\r\nHost: a\r\n\r\n", 200, None, True),
    ("unknown_route", b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n", 404, "unknown_route", False),
    ("method_not_allowed", b"DELETE /shop/items HTTP/1.1\r\nHost: a\r\n\r\n", 405, "method_not_allowed", False),
    ("bad_target", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request_target", False),
    ("declared_body_too_large", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\n123456789",
     413, "body_too_large", False),
    ("streamed_body_too_large", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n", 413, "body_too_large", False),  # refused before forwarding
    ("preflight", b"OPTIONS /shop/items HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\n"
     b"Access-Control-Request-Method: POST\r\n\r\n", 204, None, False),
    ("preflight_refused", b"OPTIONS /shop/items HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\n"
     b"Access-Control-Request-Method: POST\r\n\r\n", 403, "cors_preflight_refused", False),
]


@pytest.mark.parametrize(("name", "raw", "status", "reason", "forwarded"), CASES, ids=[c[0] for c in CASES])
async def test_each_way_a_request_ends(tmp_path, name, raw, status, reason, forwarded):
    gw, audit = gateway(tmp_path)
    requests: list[bytes] = []
    for pool in gw.pools.values():
        answering_upstream(pool, requests)
    code, headers, _ = await ask(gw, raw)
    assert code == status
    assert headers["x-request-id"]
    [event] = audit.events
    assert event["status"] == status and event["reason"] == reason
    assert bool(requests) is forwarded
    if status == 200:
        assert event["upstream_status"] == 200
    if status >= 400:
        assert headers["content-type"] == "application/problem+json"
    gw.close()


async def test_an_upstream_that_cannot_be_reached_is_a_502_problem(tmp_path):
    gw, audit = gateway(tmp_path)  # nothing listens on 127.0.0.1:9
    code, headers, _ = await ask(gw, b"GET /shop/items HTTP/1.1\r\nHost: a\r\n\r\n")
    assert code == 502 and headers["content-type"] == "application/problem+json"
    assert audit.events[0]["reason"] == "upstream_connect_failed"
    gw.close()


async def test_a_gateway_bug_fails_closed_with_a_500_and_no_detail(tmp_path):
    """An exception nobody expected, raised while the request is forwarded (here by the upstream connection's
    transport: the fault is injected at the IO seam, so the compiled proxy runs unchanged)."""
    gw, audit = gateway(tmp_path)
    [pool] = gw.pools.values()
    conn = UpstreamConnection(pool)
    transport = MemoryTransport()

    def broken(data: bytes) -> None:
        raise RuntimeError("secret internals")

    transport.write = broken  # type: ignore[method-assign]
    conn.connection_made(transport)
    pool._open += 1
    conn.reusable = True
    pool.release(conn)
    code, headers, body = await ask(gw, b"GET /shop/items HTTP/1.1\r\nHost: a\r\n\r\n")
    assert code == 500 and b"secret" not in body and headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"  # the client connection is not trusted any more either
    [event] = audit.events
    assert event["reason"] == "gateway_error" and event["status"] == 500
    assert "secret internals" in event["log_detail"]  # the operator is told everything
    assert headers["x-request-id"] == event["request_id"]  # and the client can quote the request to them
    assert conn.closed and pool.idle() is None  # the upstream connection the bug hit is not reused
    gw.close()


async def test_route_returns_values(tmp_path):
    gw, _ = gateway(tmp_path)

    class Ex:
        method, target, headers, peer, tls, peer_cert = "GET", "/shop/items?a=1", [("host", "A:80")], "192.0.2.1", \
            False, None

    ctx, traceparent = gw._context(Ex())  # type: ignore[arg-type]
    assert (ctx.path, ctx.query, ctx.host) == ("/shop/items", "a=1", "a") and traceparent.startswith("00-")
    routed = gw._route(Ex(), ctx)  # type: ignore[arg-type]
    assert isinstance(routed, Routed) and routed.route.info.route == "list-items" and routed.preflight is None
    Ex.target = "/shop/%2e%2e/items"
    ctx, _ = gw._context(Ex())  # type: ignore[arg-type]
    refused = gw._route(Ex(), ctx)  # type: ignore[arg-type]
    assert isinstance(refused, Problem) and refused.status == 400
    assert Forwarded(499).upstream_status is None
    gw.close()


async def test_a_body_that_passes_the_limit_while_streamed_ends_the_upstream_request(tmp_path):
    gw, audit = gateway(tmp_path)
    requests: list[bytes] = []
    for pool in gw.pools.values():
        answering_upstream(pool, requests)
    conn = Http1Connection(gw.handle, ServerLimits(), set(), gw.on_protocol_error)
    transport = MemoryTransport()
    conn.connection_made(transport)
    conn.data_received(b"POST /shop/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n")
    for _ in range(10):
        await asyncio.sleep(0)
    assert requests[0].startswith(b"POST /shop/items HTTP/1.1") and requests[-1] == b"5\r\n12345\r\n"
    conn.data_received(b"5\r\n67890\r\n0\r\n\r\n")  # 10 bytes: past the route's 8
    for _ in range(10):
        await asyncio.sleep(0)
    code, headers, _ = parse_response(transport.take())
    assert code == 413 and headers["connection"] == "close" and transport.closed
    assert audit.events[0]["reason"] == "body_too_large"
    gw.close()


async def test_a_grpc_message_that_does_not_decode_is_refused_as_invalid():
    """The first message's decoder may raise anything (protobuf's DecodeError): a 400 deny, not a gateway error
    (compiled code once typed the `except ... as` name after an earlier clause and raised TypeError instead)."""
    from bastion.context import RequestContext
    from bastion.forwarding import GrpcLimits
    from bastion.server.proxy import _first_message

    def decode(message: bytes) -> object:
        raise ValueError("not a message")

    class Ex:
        chunks = [b"\x00\x00\x00\x00\x03\xff\xff\xff", b""]

        async def read_chunk(self) -> bytes:
            return self.chunks.pop(0)

    ctx = RequestContext(method="POST", raw_target="/x", path="/x", query="", headers=[], client_ip="192.0.2.1",
                         request_id="rid", start=0.0)
    _, deny = await _first_message(Ex(), ctx, GrpcLimits(decode=decode), "pid")  # type: ignore[arg-type]
    assert deny is not None and (deny.status, deny.reason) == (400, "grpc_malformed_message")
