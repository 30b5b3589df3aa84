"""The HTTP/2 upstream client (cleartext prior knowledge or TLS with ALPN "h2"), for gRPC upstreams.

One multiplexed connection per upstream carries many streams; each `UpstreamStream` streams both ways with
flow control (our window opens as the proxy reads; its sends wait for the upstream's window) and keeps the
response's trailers, where gRPC puts its status.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from bastion.server.flow import WriteFlow
from bastion.server.upstream import UpstreamError

_WINDOW = 1024 * 1024


class UpstreamStream:
    """One request/response exchange on an upstream HTTP/2 connection."""

    def __init__(self, conn: H2UpstreamConnection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        loop = conn.loop
        self.response: asyncio.Future[tuple[int, list[tuple[str, str]], bool]] = loop.create_future()
        self.trailers: list[tuple[str, str]] = []
        self._chunks: collections.deque[tuple[bytes, int]] = collections.deque()
        self._ended = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._window_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.unsent = b""  # request body bytes `open` could not send for want of window

    async def send(self, data: bytes, end: bool = False) -> None:
        """Send request body bytes as the upstream's windows allow."""
        conn = self._conn
        view = memoryview(data)
        while view:
            self._check()
            room = min(conn.h2.local_flow_control_window(self.stream_id), conn.h2.max_outbound_frame_size,
                       len(view))
            if room <= 0:
                self._window_waiter = conn.loop.create_future()
                try:
                    await self._window_waiter
                finally:
                    self._window_waiter = None
                continue
            conn.h2.send_data(self.stream_id, bytes(view[:room]), end_stream=end and room == len(view))
            view = view[room:]
            conn.flush()
            await conn.drain()
        if end and not data:
            self._check()
            conn.h2.end_stream(self.stream_id)
            conn.flush()

    def send_now(self, data: bytes) -> bytes:
        """Send the last request body bytes as far as the windows allow now, END_STREAM with the last of them,
        without flushing (the caller does, once); returns what did not fit (to `send` when the window opens)."""
        h2c = self._conn.h2
        if not data:
            h2c.end_stream(self.stream_id)
            return b""
        view = memoryview(data)
        while view:
            room = min(h2c.local_flow_control_window(self.stream_id), h2c.max_outbound_frame_size, len(view))
            if room <= 0:
                break
            h2c.send_data(self.stream_id, bytes(view[:room]), end_stream=room == len(view))
            view = view[room:]
        return bytes(view)

    @property
    def buffered(self) -> bool:
        """Response body bytes (or the end of the stream) are here already: a read will not wait."""
        return bool(self._chunks) or self._ended or self._error is not None

    @property
    def complete(self) -> bool:
        """The upstream ended the stream and every body byte was read (trailers, if any, are here)."""
        return self._ended and not self._chunks and self._error is None

    async def read(self) -> bytes:
        """The next response body bytes, or b"" at the end (trailers, if any, are in `trailers` then)."""
        while True:
            if self._chunks:
                data, flow = self._chunks.popleft()
                self._conn.ack(self.stream_id, flow)
                return data
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def reset(self, code: int = ErrorCodes.CANCEL) -> None:
        """Cancel the exchange; whoever waits on it gets an UpstreamError."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(h2.exceptions.H2Error):
                self._conn.h2.reset_stream(self.stream_id, code)
            self._conn.flush()
            self._conn.forget(self)
        if not self._ended:
            self._fail(UpstreamError("upstream_stream_cancelled", "stream cancelled by the gateway"))

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self.closed:
            raise UpstreamError("upstream_stream_closed", "upstream stream closed")

    def _wake(self) -> None:
        for waiter in (self._waiter, self._window_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        if not self.response.done():
            self.response.set_exception(error)
            self.response.exception()
        self._wake()


class H2UpstreamConnection(asyncio.Protocol):
    """One HTTP/2 connection to an upstream."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="latin-1"))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, UpstreamStream] = {}
        self.closed = False
        self.goaway = False
        self._flow = WriteFlow(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW, SettingCodes.ENABLE_PUSH: 0})
        self.h2.increment_flow_control_window(_WINDOW)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = UpstreamError("upstream_closed", "upstream closed the connection")
        for stream in list(self.streams.values()):
            stream._fail(error)
        self.streams.clear()
        self._flow.release()

    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
        self._flow.resume()

    async def drain(self) -> None:
        if not self.closed:
            await self._flow.wait()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.flush()
            self._abort(UpstreamError("upstream_bad_response", f"upstream HTTP/2 error: {exc}"))
            return
        for event in events:
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived) and stream is not None:
                headers = _decoded(event.headers)
                status = int(next((v for n, v in headers if n == ":status"), "0"))
                if not stream.response.done():
                    stream.response.set_result((status, headers, bool(event.stream_ended)))
            elif isinstance(event, h2.events.DataReceived):
                if stream is None:
                    self.ack(event.stream_id, event.flow_controlled_length)
                else:
                    stream._chunks.append((event.data, event.flow_controlled_length))
                    stream._wake()
            elif isinstance(event, h2.events.TrailersReceived) and stream is not None:
                stream.trailers = _decoded(event.headers)
            elif isinstance(event, h2.events.StreamEnded) and stream is not None:
                stream._ended = True
                stream.closed = True
                stream._wake()
                self.forget(stream)
            elif isinstance(event, h2.events.StreamReset) and stream is not None:
                stream._fail(UpstreamError("upstream_reset", f"upstream reset the stream ({event.error_code!r})"))
                stream.closed = True
                self.forget(stream)
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                targets = [stream] if stream is not None else list(self.streams.values())
                for target in targets:
                    target._wake()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = True
                error = UpstreamError("upstream_goaway", "upstream closed the connection (GOAWAY)")
                for sid, open_stream in list(self.streams.items()):
                    if sid > (event.last_stream_id or 0):
                        open_stream._fail(error)
        self.flush()

    def open(self, headers: list[tuple[str, str]], end_stream: bool, body: bytes | None = None) -> UpstreamStream:
        """A new stream; with `body`, the whole request body goes with the headers in one write (as far as the
        windows allow: the rest is left in `unsent`)."""
        stream_id = self.h2.get_next_available_stream_id()
        stream = UpstreamStream(self, stream_id)
        self.streams[stream_id] = stream
        self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        if body is not None:
            stream.unsent = stream.send_now(body)
        self.flush()
        return stream

    def ack(self, stream_id: int, flow: int) -> None:
        if flow and not self.closed:
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.acknowledge_received_data(flow, stream_id)
            self.flush()

    def forget(self, stream: UpstreamStream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    @property
    def usable(self) -> bool:
        return not self.closed and not self.goaway and self.h2.open_outbound_streams < \
            self.h2.remote_settings.max_concurrent_streams

    def _abort(self, error: UpstreamError) -> None:
        for stream in list(self.streams.values()):
            stream._fail(error)
        self.streams.clear()
        self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.close_connection()
                self.flush()
            self.transport.close()


class H2Upstream:
    """Streams to one upstream over a few multiplexed HTTP/2 connections (a new one when all are full)."""

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None, max_connections: int = 4) -> None:
        self.host = host
        self.port = port
        self.authority = f"{host}:{port}"
        self.scheme = "https" if tls is not None else "http"
        self._tls = tls
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        self._max = max_connections
        self._conns: list[H2UpstreamConnection] = []
        self._connecting: asyncio.Lock | None = None

    async def open_stream(self, headers: list[tuple[str, str]], *, connect_timeout: float,
                          end_stream: bool = False, body: bytes | None = None) -> UpstreamStream:
        """A stream on a usable connection; `body`: the whole request body, sent with the headers."""
        conn = await self._connection(connect_timeout)
        try:
            return conn.open(headers, end_stream, body)
        except h2.exceptions.H2Error as exc:
            raise UpstreamError("upstream_bad_request", f"cannot open an upstream stream: {exc}") from None

    async def _connection(self, timeout: float) -> H2UpstreamConnection:
        self._conns = [c for c in self._conns if not c.closed]
        for conn in self._conns:
            if conn.usable:
                return conn
        if len(self._conns) >= self._max:
            raise UpstreamError("upstream_pool_exhausted", "every upstream HTTP/2 connection is full", status=503)
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            for conn in self._conns:
                if conn.usable:
                    return conn
            loop = asyncio.get_running_loop()
            try:
                _, conn = await asyncio.wait_for(loop.create_connection(
                    H2UpstreamConnection, self.host, self.port, ssl=self._tls,
                    server_hostname=self.host if self._tls else None), timeout)
            except TimeoutError:
                raise UpstreamError("upstream_connect_timeout", f"connect to {self.authority} timed out",
                                    status=504) from None
            except (OSError, ssl.SSLError) as exc:
                raise UpstreamError("upstream_connect_failed", f"connect to {self.authority}: {exc}") from None
            if self._tls is not None:
                ssl_object = conn.transport.get_extra_info("ssl_object") if conn.transport else None
                if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                    conn.close()
                    raise UpstreamError("upstream_no_h2", f"{self.authority} did not agree to HTTP/2 (ALPN)")
            self._conns.append(conn)
            return conn

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()


def _decoded(headers: Any) -> list[tuple[str, str]]:
    """Header fields as h2 hands them over: str already (`header_encoding="latin-1"`), whatever its stubs say."""
    return [(str(n), str(v)) for n, v in headers]
