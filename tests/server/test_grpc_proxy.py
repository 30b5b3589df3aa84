"""gRPC end to end: a real grpcio client -> Bastion's HTTP/2 listener -> forward_grpc -> a real grpcio server.

The handler here is the gRPC branch Gateway.handle will run (route match, a denial answered the gRPC way,
forwarding over the HTTP/2 upstream); the pipeline itself is covered by the HTTP/2 server tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from hyperframe.frame import DataFrame, Frame, HeadersFrame

from bastion.context import Deny, RequestContext
from bastion.forwarding import GrpcLimits
from bastion.grpc.routes import GrpcMethod, GrpcRoutes
from bastion.grpc.status import grpc_problem
from bastion.server.grpc_proxy import GrpcResult, forward_grpc
from bastion.server.http2 import H2Connection, H2Limits
from bastion.server.upstream_h2 import H2Upstream, H2UpstreamConnection
from tests.grpc.echo import SERVICE, echo_service
from tests.server.test_http2 import h2_client

METHODS = [GrpcMethod(SERVICE, "Unary"), GrpcMethod(SERVICE, "Stream", server_streaming=True),
           GrpcMethod(SERVICE, "Collect", client_streaming=True),
           GrpcMethod(SERVICE, "Chat", client_streaming=True, server_streaming=True),
           GrpcMethod(SERVICE, "Slow")]


@dataclass
class Stack:
    port: int
    results: list[GrpcResult] = field(default_factory=list)


@asynccontextmanager
async def grpc_stack(limits: GrpcLimits | None = None, upstream_port: int | None = None) -> AsyncIterator[Stack]:
    limits = limits or GrpcLimits()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((echo_service("x-request-id", slow_seconds=5),))
    port = upstream_port or server.add_insecure_port("127.0.0.1:0")
    await server.start()
    upstream = H2Upstream("127.0.0.1", port)
    routes = GrpcRoutes(METHODS)
    counter = iter(range(1, 1_000_000))

    async def handle(ex) -> None:
        ctx = RequestContext(method=ex.method, raw_target=ex.target, path=ex.target, query="",
                             headers=ex.headers, client_ip=ex.peer, request_id=f"req-{next(counter)}", start=0.0)
        if routes.match(ctx.path) is None:
            grpc_problem(ex, Deny(404, "unknown_route", "gateway/default-deny"), ctx.request_id)
            return
        denied = ctx.header("x-test-deny")  # stands in for a stage's Deny
        if denied:
            grpc_problem(ex, Deny(int(denied), "test", "test/deny", detail="denied by policy",
                                  log_detail="secret operator detail"), ctx.request_id)
            return
        stack.results.append(await forward_grpc(ex, ctx, upstream, limits))

    stack = Stack(0)
    conns: set[H2Connection] = set()
    gateway = await asyncio.get_running_loop().create_server(
        lambda: H2Connection(handle, H2Limits(), conns), "127.0.0.1", 0)
    stack.port = gateway.sockets[0].getsockname()[1]
    try:
        yield stack
    finally:
        gateway.close()
        for conn in list(conns):
            conn.abort()
        upstream.close()
        await server.stop(None)


@asynccontextmanager
async def channel(port: int) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch


def rpc(ch: grpc.aio.Channel, kind: str, method: str):
    return getattr(ch, kind)(f"/{SERVICE}/{method}")


async def test_unary_through_the_gateway_with_request_id(tmp_path):
    async with grpc_stack() as stack, channel(stack.port) as ch:
        call = rpc(ch, "unary_unary", "Unary")(b"hello", metadata=(("x-test", "1"),))
        reply = await call
        assert reply.startswith(b"hello|req-")
        assert await call.code() == grpc.StatusCode.OK
        assert dict(await call.initial_metadata())["x-request-id"] == reply.split(b"|")[1].decode()
        assert stack.results[-1].grpc_status == 0


class _Recorder:
    """A transport that records each write (one send to the socket) and passes everything else through."""

    def __init__(self, transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name):
        return getattr(self._transport, name)


def record_writes(monkeypatch) -> tuple[list[bytes], list[bytes]]:
    """What the gateway sends to the upstream and to the client, one entry per write."""
    upstream: list[bytes] = []
    client: list[bytes] = []
    for cls, writes in ((H2UpstreamConnection, upstream), (H2Connection, client)):
        def made(self, transport, original=cls.connection_made, writes=writes):
            original(self, _Recorder(transport, writes))
        monkeypatch.setattr(cls, "connection_made", made)
    return upstream, client


def stream_frames(chunk: bytes) -> list[tuple[str, bool]]:
    """The HEADERS and DATA frames in one write, with their END_STREAM flag (the client preface skipped)."""
    view = memoryview(chunk.removeprefix(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
    out = []
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9:9 + length])
        if isinstance(frame, HeadersFrame | DataFrame):
            out.append((type(frame).__name__, "END_STREAM" in frame.flags))
        view = view[9 + length:]
    return out


async def test_a_unary_call_is_one_write_each_way(tmp_path, monkeypatch):
    # the whole request (HEADERS, DATA ending the stream: no empty DATA frame after it) in one send upstream,
    # the whole response (HEADERS, DATA, trailers) in one send to the client
    upstream, client = record_writes(monkeypatch)
    async with grpc_stack() as stack, channel(stack.port) as ch:
        assert (await rpc(ch, "unary_unary", "Unary")(b"hello")).startswith(b"hello|req-")
    sent_up = [frames for frames in map(stream_frames, upstream) if frames]
    sent_down = [frames for frames in map(stream_frames, client) if frames]
    assert sent_up == [[("HeadersFrame", False), ("DataFrame", True)]]
    assert sent_down == [[("HeadersFrame", False), ("DataFrame", False), ("HeadersFrame", True)]]


async def test_a_whole_request_over_the_limit_never_reaches_the_upstream(tmp_path, monkeypatch):
    upstream, _ = record_writes(monkeypatch)
    async with grpc_stack(GrpcLimits(max_message_bytes=1000)) as stack, channel(stack.port) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rpc(ch, "unary_unary", "Unary")(b"a" * 2000)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stack.results[-1].reason == "grpc_message_too_large"
    assert [frames for frames in map(stream_frames, upstream) if frames] == []


async def test_a_request_ending_inside_a_message_is_internal_and_never_forwarded(tmp_path, monkeypatch):
    upstream, _ = record_writes(monkeypatch)
    async with grpc_stack() as stack, h2_client(stack.port) as client:
        # a message header announcing 16 bytes, then 3: the stream ends inside the message
        stream = await client.request("POST", f"/{SERVICE}/Unary", [("content-type", "application/grpc"),
                                                                    ("te", "trailers")], b"\x00\x00\x00\x00\x10abc")
        assert stream.status == 200
        assert stream.headers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])
        assert stack.results[-1].reason == "grpc_truncated_message"
    assert [frames for frames in map(stream_frames, upstream) if frames] == []


async def test_server_streaming(tmp_path):
    async with grpc_stack() as stack, channel(stack.port) as ch:
        replies = [m async for m in rpc(ch, "unary_stream", "Stream")(b"50")]
        assert replies == [b"m%d" % n for n in range(50)]


async def test_client_streaming(tmp_path):
    async with grpc_stack() as stack, channel(stack.port) as ch:

        async def parts() -> AsyncIterator[bytes]:
            for n in range(20):
                yield b"x" * 10_000 + b"%d" % n

        reply = await rpc(ch, "stream_unary", "Collect")(parts())
        assert len(reply) == sum(10_000 + len(str(n)) for n in range(20))


async def test_bidirectional_streaming_is_interactive(tmp_path):
    async with grpc_stack() as stack, channel(stack.port) as ch:
        call = rpc(ch, "stream_stream", "Chat")()
        for word in (b"ping", b"pong", b"done"):
            await call.write(word)
            assert await call.read() == word.upper()  # each answer arrives before the next request is sent
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("status, code", [
    (401, grpc.StatusCode.UNAUTHENTICATED), (403, grpc.StatusCode.PERMISSION_DENIED),
    (429, grpc.StatusCode.RESOURCE_EXHAUSTED), (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (400, grpc.StatusCode.INVALID_ARGUMENT), (503, grpc.StatusCode.UNAVAILABLE),
    (504, grpc.StatusCode.DEADLINE_EXCEEDED), (500, grpc.StatusCode.INTERNAL),
])
async def test_denials_are_grpc_statuses(tmp_path, status, code):
    async with grpc_stack() as stack, channel(stack.port) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rpc(ch, "unary_unary", "Unary")(b"x", metadata=(("x-test-deny", str(status)),))
        assert info.value.code() == code
        assert info.value.details() == "denied by policy"  # the safe detail, never the operator's
        assert dict(info.value.trailing_metadata())["x-request-id"].startswith("req-")


async def test_unknown_method_is_unimplemented_and_never_forwarded(tmp_path):
    async with grpc_stack() as stack, channel(stack.port) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rpc(ch, "unary_unary", "Hidden")(b"x")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert stack.results == []


async def test_deadline_is_cut_to_the_route_maximum_and_enforced(tmp_path):
    async with grpc_stack(GrpcLimits(max_timeout=0.3)) as stack, channel(stack.port) as ch:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rpc(ch, "unary_unary", "Slow")(b"x", timeout=10)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2


async def test_gateway_enforces_the_deadline_even_when_the_upstream_ignores_it(tmp_path):
    # the upstream here is an HTTP/2 server that never answers (it does not read grpc-timeout)
    async def never(ex) -> None:
        await asyncio.sleep(30)

    hold: set[H2Connection] = set()
    deaf = await asyncio.get_running_loop().create_server(lambda: H2Connection(never, H2Limits(), hold),
                                                          "127.0.0.1", 0)
    try:
        port = deaf.sockets[0].getsockname()[1]
        async with grpc_stack(GrpcLimits(default_timeout=0.3), upstream_port=port) as stack, \
                channel(stack.port) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await rpc(ch, "unary_unary", "Unary")(b"x")  # no client deadline: the route default applies
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert stack.results[-1].reason == "grpc_deadline_exceeded"
    finally:
        deaf.close()
        for conn in list(hold):
            conn.abort()


async def test_message_over_the_size_limit_is_resource_exhausted(tmp_path):
    async with grpc_stack(GrpcLimits(max_message_bytes=1000)) as stack, channel(stack.port) as ch:
        assert (await rpc(ch, "unary_unary", "Unary")(b"a" * 900)).startswith(b"a" * 900)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rpc(ch, "unary_unary", "Unary")(b"a" * 2000)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stack.results[-1].reason == "grpc_message_too_large"


async def test_too_many_messages_per_stream_is_resource_exhausted(tmp_path):
    async with grpc_stack(GrpcLimits(max_messages=5)) as stack, channel(stack.port) as ch:

        async def parts(n: int) -> AsyncIterator[bytes]:
            for _ in range(n):
                yield b"p"

        assert await rpc(ch, "stream_unary", "Collect")(parts(5)) == b"ppppp"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rpc(ch, "stream_unary", "Collect")(parts(50))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stack.results[-1].reason == "grpc_too_many_messages"


async def test_upstream_down_is_unavailable(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with grpc_stack(upstream_port=dead) as stack, channel(stack.port) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rpc(ch, "unary_unary", "Unary")(b"x")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
