"""HTTP/2 downstream: the same Gateway.handle per stream, over a real socket, driven by a raw `h2` client."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

from bastion.server.app import Runtime
from bastion.server.body import RequestBody
from bastion.server.http2 import H2Connection, H2Exchange, H2Limits, H2Stats
from tests.helpers import BASIC, running_gateway

pytestmark = pytest.mark.asyncio


@dataclass
class Stream:
    """What the client saw on one stream."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RawH2:
    """A raw HTTP/2 client: h2's client state machine for normal requests, hand-made frames for attacks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, ack_data: bool = True,
                 window: int | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.ack_data = ack_data
        self.streams: dict[int, Stream] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self.window_opened = asyncio.Event()
        self.settled = asyncio.Event()  # the server's SETTINGS arrived (and our ACK went out)
        self.flush()
        self._task = asyncio.get_running_loop().create_task(self._read())

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def settle(self) -> None:
        """Let the SETTINGS exchange finish, so that raw frames are not interleaved with our ACK."""
        await asyncio.wait_for(self.settled.wait(), 5)
        await asyncio.sleep(0.01)

    def raw(self, data: bytes) -> None:
        """Bytes straight onto the socket, bypassing the client's state machine (attacks)."""
        self.writer.write(data)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    events = []
                for event in events:
                    self._event(event)
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for stream in self.streams.values():
                stream.done.set()

    def _event(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self.streams.setdefault(sid, Stream()) if sid else None
        if isinstance(event, h2.events.ResponseReceived):
            stream.headers = dict(event.headers)
            stream.status = int(stream.headers[":status"])
        elif isinstance(event, h2.events.DataReceived):
            stream.body += event.data
            if self.ack_data and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.TrailersReceived):
            stream.trailers = dict(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            stream.done.set()
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = event.error_code
            stream.done.set()
        elif isinstance(event, h2.events.ConnectionTerminated) and self.goaway is None:
            self.goaway = event
        if isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window_opened.set()
            self.settled.set()

    def start(self, method: str, path: str, headers: list[tuple[str, str]] = (), body: bytes | None = b"",
              end: bool = True) -> int:
        """Open a stream; a body must fit the window (use `request` for larger ones)."""
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream()
        fields = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "gateway.test"),
                  *headers]
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    async def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        """Send `body` as the windows allow."""
        view = memoryview(body)
        while view:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(view))
            if room <= 0:
                self.window_opened.clear()
                await asyncio.wait_for(self.window_opened.wait(), 5)
                continue
            self.conn.send_data(sid, bytes(view[:room]), end_stream=end and room == len(view))
            view = view[room:]
            self.flush()
        if end and not body:
            self.conn.end_stream(sid)
            self.flush()

    async def request(self, method: str, path: str, headers: list[tuple[str, str]] = (),
                      body: bytes = b"") -> Stream:
        sid = self.start(method, path, headers, None, end=not body)
        if body:
            await self.send_body(sid, body)
        await asyncio.wait_for(self.streams[sid].done.wait(), 5)
        return self.streams[sid]

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@asynccontextmanager
async def h2_client(port: int, **kw: object) -> AsyncIterator[RawH2]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = RawH2(reader, writer, **kw)
    try:
        yield client
    finally:
        await client.close()


@dataclass
class H2Gateway:
    runtime: Runtime
    port: int
    stats: H2Stats
    errors: list[tuple[str, str]]
    connections: set[H2Connection]


@asynccontextmanager
async def h2_gateway(tmp_path: Path, config: str = BASIC, **limits: object) -> AsyncIterator[H2Gateway]:
    """The real gateway, with an HTTP/2 listener on the same Gateway object; protocol errors are recorded."""
    async with running_gateway(tmp_path, config) as runtime:
        gateway = runtime.gateway
        errors: list[tuple[str, str]] = []

        def on_error(peer, error, target):
            errors.append((error.reason, error.message))
            return gateway.on_protocol_error(peer, error, target)

        stats = H2Stats()
        connections: set[H2Connection] = set()
        h2_limits = H2Limits(**limits)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: H2Connection(gateway.handle, h2_limits, connections, on_error, stats=stats), "127.0.0.1", 0)
        try:
            yield H2Gateway(runtime, server.sockets[0].getsockname()[1], stats, errors, connections)
        finally:
            server.close()
            for conn in list(connections):
                conn.abort()


async def assert_serves(port: int) -> None:
    """A fresh connection still gets a normal answer: the worker is healthy."""
    async with h2_client(port) as client:
        stream = await client.request("GET", "/shop/items")
        assert stream.status == 200
        assert json.loads(stream.body)["service"] == "demo-upstream"


# ---- the pipeline, unchanged, per stream ----------------------------------------------------------------------


async def test_get_goes_through_the_pipeline_and_upstream(tmp_path):
    async with h2_gateway(tmp_path) as gw, h2_client(gw.port) as client:
        stream = await client.request("GET", "/shop/items?x=1", [("x-user-id", "spoofed"), ("cookie", "a=1")])
        assert stream.status == 200
        echoed = json.loads(stream.body)
        assert echoed["target"] == "/shop/items?x=1"
        assert echoed["headers"]["host"] == "127.0.0.1:" + echoed["headers"]["host"].split(":")[1]
        assert echoed["headers"]["x-forwarded-host"] == "gateway.test"
        assert "x-user-id" not in echoed["headers"]  # identity headers stripped, as on HTTP/1.1
        assert echoed["headers"]["cookie"] == "a=1"
        assert stream.headers["x-request-id"]
        assert "server" not in stream.headers and "x-powered-by" not in stream.headers
        assert int(stream.headers["content-length"]) == len(stream.body)


async def test_unknown_route_and_method_are_problem_documents(tmp_path):
    async with h2_gateway(tmp_path) as gw, h2_client(gw.port) as client:
        missing = await client.request("GET", "/nope")
        assert missing.status == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert json.loads(missing.body)["request_id"] == missing.headers["x-request-id"]
        wrong = await client.request("DELETE", "/shop/items")
        assert wrong.status == 405
        assert wrong.headers["allow"] == "GET, POST"


@pytest.mark.parametrize("size", [0, 10, 300_000])
async def test_post_bodies_stream_upstream_with_and_without_content_length(tmp_path, size):
    body = b"x" * size
    async with h2_gateway(tmp_path) as gw, h2_client(gw.port) as client:
        with_length = await client.request("POST", "/shop/items", [("content-length", str(size))], body)
        assert with_length.status == 200
        assert json.loads(with_length.body)["body_bytes"] == size
        without = await client.request("POST", "/shop/items", [], body)  # no length: framed chunked upstream
        assert without.status == 200
        assert json.loads(without.body)["body_bytes"] == size


async def test_a_stream_with_a_body_is_freed_without_the_cyclic_collector(tmp_path):
    # exchange -> body -> its owner must not lead back to the exchange: otherwise every stream with a body (each
    # gRPC call) leaves its exchange, body, task and headers to the cyclic GC (gen-1/gen-2 work per request)
    async with h2_gateway(tmp_path) as gw, h2_client(gw.port) as client:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable stays in gc.garbage
        try:
            for size in (5, 300_000):  # a body within the first window, and one that needs WINDOW_UPDATEs
                stream = await client.request("POST", "/shop/items", [("content-length", str(size))], b"x" * size)
                assert stream.status == 200
                assert json.loads(stream.body)["body_bytes"] == size
            await asyncio.sleep(0.05)  # the handlers' done callbacks have run: the streams are forgotten
            (conn,) = gw.connections
            assert conn.idle
            gc.collect()
            cyclic = [type(o).__name__ for o in gc.garbage if isinstance(o, (H2Exchange, RequestBody))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert cyclic == []


async def test_many_streams_on_one_connection_concurrently(tmp_path):
    async with h2_gateway(tmp_path) as gw, h2_client(gw.port) as client:
        ids = [client.start("GET", f"/shop/items/{n}") for n in range(50)]
        await asyncio.wait_for(asyncio.gather(*(client.streams[i].done.wait() for i in ids)), 10)
        for n, sid in enumerate(ids):
            assert client.streams[sid].status == 200
            assert json.loads(client.streams[sid].body)["target"] == f"/shop/items/{n}"


async def test_body_over_the_route_limit_is_413_and_the_connection_lives_on(tmp_path):
    config = BASIC.replace("identity: {required: false}",
                           "identity: {required: false}\n    traffic: {max_body_bytes: 1000}")
    async with h2_gateway(tmp_path, config) as gw, h2_client(gw.port) as client:
        declared = await client.request("POST", "/shop/items", [("content-length", "5000")], b"y" * 5000)
        assert declared.status == 413
        streamed = await client.request("POST", "/shop/items", [], b"y" * 5000)
        assert streamed.status == 413 or streamed.reset is not None
        again = await client.request("GET", "/shop/items")
        assert again.status == 200


@pytest.mark.parametrize("name, value", [
    ("connection", "keep-alive"), ("transfer-encoding", "chunked"), ("keep-alive", "5"), ("upgrade", "websocket"),
    ("te", "gzip"),
])
async def test_connection_specific_headers_are_a_protocol_error(tmp_path, name, value):
    # RFC 9113 §8.2.2; h2 treats the malformed request as a connection error (allowed by §5.4.1)
    async with h2_gateway(tmp_path) as gw:
        async with h2_client(gw.port) as client:
            client.conn.config.validate_outbound_headers = False
            client.conn.config.normalize_outbound_headers = False
            client.start("GET", "/shop/items", [(name, value)])
            await client.wait_closed()
            assert client.goaway is not None and client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
        assert gw.stats["h2_protocol_error"] == 1
        await assert_serves(gw.port)


@pytest.mark.parametrize("values", [("3", "4"), ("abc",), ("-3",), ("+3",)])
async def test_invalid_content_length_is_malformed(tmp_path, values):
    # RFC 9113 §8.1.1: malformed; h2 refuses some as a connection error, Bastion resets the stream for the rest
    async with h2_gateway(tmp_path) as gw:
        async with h2_client(gw.port) as client:
            client.conn.config.validate_outbound_headers = False
            client.conn.config.normalize_outbound_headers = False
            sid = client.start("POST", "/shop/items", [("content-length", v) for v in values], b"abc")
            await asyncio.wait_for(client.streams[sid].done.wait(), 5)
            stream = client.streams[sid]
            assert stream.status == 0
            assert stream.reset == ErrorCodes.PROTOCOL_ERROR or client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
        assert gw.errors and gw.errors[0][0] in ("h2_malformed_request", "h2_protocol_error")
        await assert_serves(gw.port)


async def test_head_has_no_body_and_keeps_its_length(tmp_path):
    async with h2_gateway(tmp_path) as gw, h2_client(gw.port) as client:
        stream = await client.request("HEAD", "/shop/items")
        assert stream.status == 200
        assert stream.body == b""


async def test_client_reset_cancels_the_handler_and_frees_the_stream(tmp_path):
    async with h2_gateway(tmp_path) as gw, h2_client(gw.port) as client:
        sid = client.start("POST", "/shop/items", [], b"part", end=False)  # the handler waits for the body
        await asyncio.sleep(0.1)
        client.conn.reset_stream(sid, ErrorCodes.CANCEL)
        client.flush()
        await asyncio.sleep(0.1)
        (conn,) = gw.connections
        assert conn.idle
        assert (await client.request("GET", "/shop/items")).status == 200


async def test_idle_connection_is_closed_with_goaway(tmp_path):
    async with h2_gateway(tmp_path, keepalive_timeout=0.2) as gw, h2_client(gw.port) as client:
        assert (await client.request("GET", "/shop/items")).status == 200
        await client.wait_closed(2)
        assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR


async def test_upstream_response_larger_than_the_client_window_is_flow_controlled(tmp_path):
    # the client opens its window slowly (acknowledging as it reads): all bytes arrive, none past the window
    big = b"z" * 200_000
    async with h2_gateway(tmp_path) as gw, h2_client(gw.port, window=1024) as client:
        stream = await client.request("POST", "/shop/items", [], big)
        assert stream.status == 200
        assert json.loads(stream.body)["body_bytes"] == len(big)


async def test_tls_listener_reports_tls_and_client_certificate(tmp_path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2"])
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_ctx.set_alpn_protocols(["h2"])
    config = BASIC.replace("identity: {required: false}",
                           "identity: {required: false}\n    transport: {tls: required}")
    async with running_gateway(tmp_path, config) as runtime:
        gateway = runtime.gateway
        loop = asyncio.get_running_loop()
        conns: set[H2Connection] = set()
        server = await loop.create_server(lambda: H2Connection(gateway.handle, H2Limits(), conns),
                                          "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                           server_hostname="127.0.0.1")
            client = RawH2(reader, writer)
            stream = await client.request("GET", "/shop/items")
            assert stream.status == 200
            assert json.loads(stream.body)["headers"]["x-forwarded-proto"] == "https"
            await client.close()
        finally:
            server.close()
            for conn in list(conns):
                conn.abort()
