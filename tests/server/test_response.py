"""The response side of the proxy without sockets: an upstream response streamed to the client, headers cleaned
and completed, framing chosen, and a slow client pausing the upstream."""

from __future__ import annotations

import asyncio

import pytest

from bastion.context import RequestContext
from bastion.server.http1 import H1Exchange, Http1Connection, ServerLimits
from bastion.server.response import ResponseSink
from tests.server.memory import MemoryTransport


async def noop(ex: H1Exchange) -> None:
    pass


def sink_for(method: str = "GET", version: str = "1.1") -> tuple[ResponseSink, MemoryTransport, MemoryTransport]:
    conn = Http1Connection(noop, ServerLimits(), set())
    transport = MemoryTransport()
    conn.connection_made(transport)
    ex = H1Exchange(conn, method, "/x", version, [("host", "a")], True)
    ctx = RequestContext(method=method, raw_target="/x", path="/x", query="", headers=[], client_ip="192.0.2.1",
                         request_id="rid-1", start=0.0)
    ctx.response_headers.append(("x-ratelimit-remaining", "9"))
    upstream = MemoryTransport()  # the upstream side: whether the sink paused its reading, or closed it
    return ResponseSink(ex, ctx, "00-trace-01", upstream, None), transport, upstream  # type: ignore[arg-type]


RAW = [(b"Content-Type", b"text/plain"), (b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5"),
       (b"Server", b"nginx/1.22"), (b"X-Powered-By", b"PHP"), (b"Set-Cookie", b"a=b")]


async def test_a_response_with_a_length_leaves_in_one_write_with_clean_headers():
    sink, transport, _ = sink_for()
    sink.on_head(200, [*RAW, (b"Content-Length", b"5")], True)
    assert transport.take() == b""  # the head waits for the first body bytes
    sink.on_body(b"hello")
    sink.on_end()
    out = transport.take()
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "http/1.1 200 ok" and body == b"hello"
    assert "content-length: 5" in lines and "set-cookie: a=b" in lines
    assert "x-request-id: rid-1" in lines and "traceparent: 00-trace-01" in lines
    assert "x-ratelimit-remaining: 9" in lines  # what the stages asked to add
    for dropped in ("connection", "keep-alive", "server", "x-powered-by"):  # hop-by-hop, software-revealing
        assert not any(line.startswith(dropped + ":") for line in lines), dropped
    assert sink.status == 200


async def test_a_response_without_a_length_is_chunked_to_an_http11_client():
    sink, transport, _ = sink_for()
    sink.on_head(200, RAW, False)
    sink.on_body(b"abc")
    sink.on_end()
    out = transport.take()
    assert b"transfer-encoding: chunked\r\n" in out and out.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_bodiless_answers_carry_no_body(method, status):
    sink, transport, _ = sink_for(method)
    sink.on_head(status, [(b"Content-Length", b"5")] if status == 200 else [], True)
    sink.on_end()
    out = transport.take()
    assert out.startswith(f"HTTP/1.1 {status} ".encode()) and out.endswith(b"\r\n\r\n")
    assert b"transfer-encoding" not in out


async def test_a_slow_client_pauses_the_upstream_until_it_drains():
    sink, transport, upstream = sink_for()
    conn = sink._ex._conn  # type: ignore[attr-defined]
    sink.on_head(200, [(b"Content-Length", b"6")], True)
    conn.pause_writing()  # the client's socket buffer is full
    sink.on_body(b"abc")
    assert sink.paused and upstream.paused
    conn.resume_writing()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not sink.paused and not upstream.paused
