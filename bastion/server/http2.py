"""HTTP/2 server connection (RFC 9113) on the `h2` state machine, with HTTP/2's own attacks refused.

One `H2Connection` per client connection; each request stream becomes an `H2Exchange`, which offers the same
interface as `http1.Exchange`, and is handled in its own task by the same handler (`Gateway.handle`): a stage
never knows which protocol carried the request. Request bodies are flow-controlled (the client's window is
opened only as the handler reads), response bodies respect the client's windows, and every flood or stall the
connection refuses is counted and reported through `on_error`, like a framing error on HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

from bastion.http.framing import FramingError
from bastion.http.problem import problem_body
from bastion.server.body import NO_BODY, ClientGone, RequestBody
from bastion.server.exchange import ExchangeBase, transport_peer
from bastion.server.http1 import ServerLimits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 §8.2.2: connection-specific fields never cross into HTTP/2 (h2 refuses them inbound, we drop them out)
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
_FEED = 16 * 1024  # bytes handed to h2 at a time: bounds what a header block can grow between two checks
_HIGH_WATER = 64 * 1024  # pending response bytes above this make the stream not `writable`


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Limits of one HTTP/2 connection. Rates count frames from the client per `window` seconds."""

    max_concurrent_streams: int = 100  # advertised; streams beyond are refused (RST_STREAM REFUSED_STREAM)
    initial_window_size: int = 256 * 1024  # per stream: request body buffered before the client must wait
    connection_window: int = 1024 * 1024  # all streams together
    max_frame_size: int = 16 * 1024
    max_header_list_size: int = 16 * 1024  # decoded (RFC 7541 §4.1 sizes): the HPACK bomb limit
    max_headers: int = 100
    max_header_block_bytes: int = 32 * 1024  # compressed HEADERS + CONTINUATION bytes of one block
    max_continuation_frames: int = 16
    window: float = 10.0
    max_resets: int = 200  # RST_STREAM from the client (CVE-2023-44487 rapid reset)
    max_refused: int = 200  # streams refused because the client ignored max_concurrent_streams
    max_settings: int = 20
    max_pings: int = 20
    max_priority: int = 200
    max_window_updates: int = 2000
    max_empty_frames: int = 200  # DATA frames without data nor END_STREAM, unknown frames (CVE-2019-9518)
    stall_timeout: float = 30.0  # a stream whose response cannot be sent (zero window) this long is reset
    max_send_buffer: int = 4 * 1024 * 1024  # response bytes waiting for the client's window, per stream
    preface_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    keepalive_timeout: float = 75.0  # no open stream this long: GOAWAY and close

    @classmethod
    def derive(cls, server: ServerLimits, **overrides: Any) -> H2Limits:
        """The HTTP/2 limits that match the HTTP/1.1 server's (timeouts, header section size)."""
        values: dict[str, Any] = {
            "preface_timeout": server.header_timeout, "body_idle_timeout": server.body_idle_timeout,
            "keepalive_timeout": server.keepalive_timeout, "max_header_list_size": server.max_header_bytes,
            "max_headers": server.max_headers,
        }
        values.update(overrides)
        return cls(**values)


class H2Stats:
    """Refusals by reason, for all connections of a server; optionally a Prometheus counter too."""

    def __init__(self, registry: Any | None = None) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._counter: Any = None
        if registry is not None:
            from prometheus_client import Counter

            self._counter = Counter("bastion_http2_refusals_total",
                                    "HTTP/2 streams and connections refused, by reason.", ["reason"],
                                    registry=registry)

    def count(self, reason: str) -> None:
        self.counts[reason] += 1
        if self._counter is not None:
            self._counter.labels(reason).inc()

    def __getitem__(self, reason: str) -> int:
        return self.counts[reason]


Handler = Callable[["H2Exchange"], Awaitable[None]]
ErrorHook = Callable[[str, FramingError, str], str]


class StreamWindow:
    """The request body's owner (`BodyOwner`) on one stream: the client's flow-control window is given back as
    the handler reads, so a body is buffered at most one window ahead of the handler."""

    __slots__ = ("_conn", "stream_id", "unacked")

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.unacked = 0  # flow-controlled bytes received and not yet read by the handler

    def body_read(self) -> None:
        if self.unacked:  # the client may send as much again
            self._conn.ack(self.stream_id, self.unacked)
            self.unacked = 0

    def body_failed(self) -> None:
        self.body_read()  # what is buffered will never be read: its window goes back


class H2Exchange(ExchangeBase):
    """One request stream and its response: the `Exchange` protocol over HTTP/2 frames."""

    _conn: H2Connection
    _window: StreamWindow | None  # the request body's owner (None: no body)
    upgrade: bytes | None = None  # RFC 9113 §8.2.2: HTTP/2 has no Upgrade (a class default, never set)

    __slots__ = (
        "_aborted", "_conn", "_declared", "_drain_waiter", "_end_pending", "_ended", "_handled", "_pending",
        "_progress", "_queued", "_trailers", "_window", "body", "chunked", "content_length", "expect_continue",
        "has_body", "headers", "method", "response_started", "status", "stream_id", "target", "task", "version",
    )

    def __init__(self, conn: H2Connection, stream_id: int, method: str, target: str,
                 headers: list[tuple[str, str]], content_length: int | None, ended: bool) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.method = method
        self.target = target
        self.version = "2"
        self.headers = headers
        self.content_length = content_length
        # an HTTP/2 body without content-length has no length up front: forwarded chunked to an HTTP/1.1
        # upstream (never unframed, which would let the body be read as a second request)
        self.chunked = not ended and content_length is None
        self.has_body = self.chunked or bool(content_length)
        self.expect_continue = False
        if ended:
            self._window = None
            self.body = NO_BODY
        else:
            # the body's owner is the stream's window, not the exchange: nothing leads from the body back to the
            # exchange, so a finished stream is freed by reference counting, not left to the cyclic GC
            self._window = StreamWindow(conn, stream_id)
            self.body = RequestBody(self._window, conn.limits.body_idle_timeout)
        self.response_started = False
        self.status = 0
        self._declared: int | None = None  # response content-length
        self._queued = 0  # response body bytes accepted from the handler
        self._pending = bytearray()  # response bytes waiting for the client's window
        self._progress = 0.0  # when response bytes last left (or could leave)
        self._end_pending = False
        self._trailers: list[tuple[str, str]] | None = None
        self._ended = False  # END_STREAM or RST_STREAM sent, or the stream is gone
        self._aborted = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._handled = False  # the handler has returned
        self.task: asyncio.Task[None] | None = None

    # ---- request body (RequestBody's owner) ---------------------------------------------------------------

    @property
    def keep_alive(self) -> bool:
        return not self._aborted

    @keep_alive.setter
    def keep_alive(self, value: bool) -> None:
        # the handler gives up on a response it has begun: the stream is reset, never ended as if complete
        if not value and self.response_started:
            self._aborted = True

    def feed(self, data: bytes, flow: int) -> None:
        """DATA from the client; `flow` is its flow-controlled length (data plus padding)."""
        window = self._window
        if window is not None and self.body.feed(data):
            window.unacked += flow
        else:
            self._conn.ack(self.stream_id, flow)  # nobody will read it: give the window back now

    # ---- response -----------------------------------------------------------------------------------------

    def start_response(self, status: int, headers: list[tuple[str, str]], *, length: int | None,
                       close: bool = False, defer: bool = False) -> bool:
        """Send the response headers. HTTP/2 frames the body itself: always returns False (never chunked).

        With `defer`, the HEADERS frame goes out with the first body bytes (or `flush`): one send, not two.
        """
        self.response_started = True
        self.status = status
        fields = [(":status", str(status))]
        for name, value in headers:
            name = name.lower()
            if name not in _CONNECTION_SPECIFIC and name != "content-length":
                fields.append((name, value))
        if length is not None and status not in (204, 304):
            fields.append(("content-length", str(length)))
        self._declared = length
        no_body = self.method == "HEAD" or status in (204, 304) or length == 0
        self._conn.send_headers(self, fields, end_stream=no_body, send=not defer)
        if no_body:
            self._declared = 0
        return False

    def write(self, data: bytes, *, send: bool = True) -> None:
        """Response body bytes; with `send=False` they wait for what is sent next (e.g. the trailers)."""
        if self._ended or self._end_pending or not data or self.method == "HEAD":
            return
        self._queued += len(data)
        self._pending += data
        if self._declared is not None and self._queued >= self._declared:
            self._end_pending = True  # the declared length is complete: END_STREAM with the last frame
        if send:
            self._conn.flush(self)

    def flush(self) -> None:
        """Send a held-back HEADERS frame now."""
        self._conn.send_queued()

    def send_trailers(self, trailers: list[tuple[str, str]]) -> None:
        """End the response with a trailer section (gRPC's status lives there)."""
        if self._ended or self._end_pending:
            return
        self._trailers = [(n.lower(), v) for n, v in trailers]
        self._end_pending = True
        self._conn.flush(self)

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool = False) -> None:
        self.start_response(status, headers, length=len(body), close=close, defer=True)
        if body:
            self.write(body)
        self.flush()

    @property
    def writable(self) -> bool:
        return len(self._pending) < _HIGH_WATER

    async def drain(self) -> None:
        """Wait until the client's windows let the pending response bytes go. Raises ClientGone."""
        while len(self._pending) >= _HIGH_WATER and not self._ended:
            self._drain_waiter = self._conn.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self._aborted and not self._handled:
            raise ClientGone()

    def _drained(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)



class _ServerState(h2.connection.H2Connection):
    """h2's state machine, with excess streams left to Bastion: refused with REFUSED_STREAM (RFC 9113 §5.1.2),
    not turned into a connection error, so a client that races its SETTINGS keeps its other streams."""

    @property
    def open_inbound_streams(self) -> int:
        count = super().open_inbound_streams  # also forgets closed streams
        return min(count, self.local_settings.max_concurrent_streams - 1)


class H2Connection(asyncio.Protocol):
    """An HTTP/2 client connection: hand each request stream to the handler, write responses, refuse abuse."""

    def __init__(self, handler: Handler, limits: H2Limits, registry: set[Any], on_error: ErrorHook | None = None,
                 *, stats: H2Stats | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.limits = limits
        self._handler = handler
        self._registry = registry
        self._on_error = on_error
        self.stats = stats or H2Stats()
        config = h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True,
                                           normalize_inbound_headers=True)
        self._h2 = _ServerState(config)
        self._h2.decoder.max_header_list_size = limits.max_header_list_size  # in force before our SETTINGS ack
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, H2Exchange] = {}  # streams whose handler runs or whose response is being sent
        self._counts: collections.Counter[str] = collections.Counter()
        self._window_start = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._goaway = False  # no new streams (client or server sent GOAWAY)
        self.closed = False
        self.peer = ""
        self.tls = False
        self.peer_cert: bytes | None = None

    # ---- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.peer, self.tls, self.peer_cert = transport_peer(transport)
        self._registry.add(self)
        lim = self.limits
        self._h2.local_settings = h2.settings.Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: lim.max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: lim.max_header_list_size,
            SettingCodes.INITIAL_WINDOW_SIZE: lim.initial_window_size,
            SettingCodes.MAX_FRAME_SIZE: lim.max_frame_size,
            SettingCodes.ENABLE_PUSH: 0,
        })
        self._h2.max_inbound_frame_size = lim.max_frame_size
        self._h2.initiate_connection()
        if lim.connection_window > 65535:
            self._h2.increment_flow_control_window(lim.connection_window - 65535)
        self._window_start = self.loop.time()
        self._set_timer(lim.preface_timeout, self._idle_timeout)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._registry.discard(self)
        self._cancel_timer()
        if self._watchdog is not None:
            self._watchdog.cancel()
        for ex in list(self._streams.values()):
            self._gone(ex)
        self._streams.clear()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        view = memoryview(data)
        for start in range(0, len(view), _FEED):
            if not self._receive(view[start:start + _FEED]) or self.closed:
                return
        self._send()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for ex in list(self._streams.values()):
            if ex._pending or ex._end_pending:
                self.flush(ex)

    # ---- frames in ----------------------------------------------------------------------------------------

    def _receive(self, data: memoryview) -> bool:
        """Feed h2 and act on its events; False once the connection is being closed."""
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.DenialOfServiceError as exc:  # hpack: decoded header list over the limit
            return self._refuse("h2_header_list_too_large", str(exc), ErrorCodes.ENHANCE_YOUR_CALM, sent=True)
        except h2.exceptions.ProtocolError as exc:  # h2 has already queued GOAWAY with the right code
            if "continuation frames" in str(exc):  # h2's own cap (64 frames) met before ours: a flood all the same
                return self._refuse("h2_continuation_flood", str(exc), ErrorCodes.ENHANCE_YOUR_CALM, sent=True)
            return self._refuse("h2_protocol_error", str(exc), exc.error_code, sent=True)
        if not self._check_header_block():
            return False
        # in order, stopping at the first refusal
        return all(self._event(event) and not self.closed for event in events)

    def _check_header_block(self) -> bool:
        # an unfinished header block (HEADERS + CONTINUATION) is held by h2 until END_HEADERS: bound it here
        pending = getattr(self._h2.incoming_buffer, "_headers_buffer", None)
        if not pending:
            return True
        lim = self.limits
        if len(pending) - 1 > lim.max_continuation_frames:
            return self._refuse("h2_continuation_flood", f"over {lim.max_continuation_frames} CONTINUATION frames",
                                ErrorCodes.ENHANCE_YOUR_CALM)
        size = sum(len(frame.data) for frame in pending)
        if size > lim.max_header_block_bytes:
            return self._refuse("h2_header_block_too_large", f"header block over {lim.max_header_block_bytes} "
                                "bytes", ErrorCodes.ENHANCE_YOUR_CALM)
        return True

    def _event(self, event: Any) -> bool:  # an h2 event, told apart by its class below
        kind = type(event)
        if kind is h2.events.DataReceived:
            ex = self._streams.get(event.stream_id)
            if not event.data and not event.stream_ended and not self._rate("empty_frame"):
                return False
            if ex is None:
                self.ack(event.stream_id, event.flow_controlled_length)
            else:
                ex.feed(event.data, event.flow_controlled_length)
            if event.stream_ended and ex is not None:
                ex.body.finish()
        elif kind is h2.events.RequestReceived:
            return self._request(event)
        elif kind is h2.events.StreamEnded:
            ex = self._streams.get(event.stream_id)
            if ex is not None:
                ex.body.finish()
        elif kind is h2.events.WindowUpdated:
            if not self._rate("window_update"):
                return False
            if event.stream_id:
                ex = self._streams.get(event.stream_id)
                if ex is not None:
                    self.flush(ex)
            else:
                self._flush_all()
        elif kind is h2.events.StreamReset:
            ex = self._streams.get(event.stream_id)
            if ex is not None:
                self._gone(ex)
            if not self._rate("reset"):
                return False
        elif kind is h2.events.RemoteSettingsChanged or kind is h2.events.SettingsAcknowledged:
            if not self._rate("settings"):
                return False
            if kind is h2.events.RemoteSettingsChanged and SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._flush_all()
        elif kind is h2.events.PingReceived or kind is h2.events.PingAckReceived:
            return self._rate("ping")
        elif kind is h2.events.PriorityUpdated:
            return self._rate("priority")
        elif kind is h2.events.ConnectionTerminated:
            self._goaway = True
            if not self._streams:
                self.close()
        elif kind is h2.events.UnknownFrameReceived:
            return self._rate("empty_frame")
        return True

    def _request(self, event: h2.events.RequestReceived) -> bool:
        stream_id = event.stream_id
        lim = self.limits
        self._counts["stream"] += 1  # earns window-update and ping allowance (see `_rate`)
        if self._goaway:
            self._h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return True
        if len(self._streams) >= lim.max_concurrent_streams and sum(
                1 for s in self._streams.values() if not s._ended) >= lim.max_concurrent_streams:
            # a stream whose response has ended is closed for the client (RFC 9113 §5.1.2) even while its
            # handler finishes its accounting: only streams still answering count against the limit
            self._h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self.stats.count("h2_stream_refused")
            return self._rate("refused")
        method = target = authority = ""
        headers: list[tuple[str, str]] = []
        host_seen = False
        content_length: int | None = None
        size = 0
        for raw_name, raw_value in event.headers:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            size += len(raw_name) + len(raw_value) + 32  # RFC 7541 §4.1 entry size, as SETTINGS counts it
            if name[0] == ":":
                if name == ":method":
                    method = value
                elif name == ":path":
                    target = value
                elif name == ":authority":
                    authority = value
                elif name == ":protocol":  # RFC 8441 extended CONNECT: we never offered it
                    return self._reset_malformed(stream_id, "h2_malformed_request", ":protocol not supported",
                                                 target)
                continue
            if name == "host":
                host_seen = True
            elif name == "content-length":
                if not value.isdigit() or (content_length is not None and int(value) != content_length):
                    return self._reset_malformed(stream_id, "h2_malformed_request", "invalid content-length",
                                                 target)
                content_length = int(value)
                continue  # one content-length, re-added by whoever frames the body upstream
            headers.append((name, value))
        if size > lim.max_header_list_size or len(headers) > lim.max_headers:
            request_id = self._report("header_too_large", f"header list of {size} bytes, {len(headers)} fields",
                                      target, 431)
            self._answer(stream_id, 431, request_id, event.stream_ended is not None)
            return True
        if authority and not host_seen:
            headers.insert(0, ("host", authority))
        if content_length is not None and event.stream_ended is None:
            headers.append(("content-length", str(content_length)))
        ex = H2Exchange(self, stream_id, method, target, headers, content_length, event.stream_ended is not None)
        if content_length == 0:
            ex.chunked = ex.has_body = False
        self._streams[stream_id] = ex
        self._cancel_timer()
        ex.task = self.loop.create_task(self._run(ex))
        ex.task.add_done_callback(lambda task: self._task_done(ex, task))
        return True

    def _answer(self, stream_id: int, status: int, request_id: str, ended: bool) -> None:
        """A problem response to a stream the handler never sees (as HTTP/1.1 answers an unparseable head)."""
        body = problem_body(status, None, request_id)
        fields = [(":status", str(status)), ("cache-control", "no-store"), ("x-request-id", request_id)]
        if self._h2.local_flow_control_window(stream_id) < len(body):  # a client with no window gets no body
            self._h2.send_headers(stream_id, [*fields, ("content-length", "0")], end_stream=True)
        else:
            fields += [("content-type", "application/problem+json"), ("content-length", str(len(body)))]
            self._h2.send_headers(stream_id, fields)
            self._h2.send_data(stream_id, body, end_stream=True)
        if not ended:
            self._h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)

    def _reset_malformed(self, stream_id: int, reason: str, message: str, target: str) -> bool:
        # RFC 9113 §8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR
        self._h2.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
        self._report(reason, message, target, 400)
        return True

    # ---- limits -------------------------------------------------------------------------------------------

    def _rate(self, kind: str) -> bool:
        """Count one frame of `kind`; past its limit in the current window, the connection is refused.

        WINDOW_UPDATE and PING frames are also what a busy, honest client sends for the responses it receives
        (gRPC clients: a window update per DATA frame, BDP pings): each stream opened in the window earns a few,
        so the limit catches frames sent for their own sake, not traffic."""
        now = self.loop.time()
        if now - self._window_start > self.limits.window:
            self._counts.clear()
            self._window_start = now
        counts = self._counts
        counts[kind] += 1
        limit = getattr(self.limits, _RATE_LIMITS[kind]) + _EARNED_PER_STREAM.get(kind, 0) * counts["stream"]
        if counts[kind] <= limit:
            return True
        return self._refuse(f"h2_{kind}_flood", f"over {limit} {kind} frames in {self.limits.window:g}s",
                            ErrorCodes.ENHANCE_YOUR_CALM)

    def _refuse(self, reason: str, message: str, code: int, *, sent: bool = False) -> bool:
        """Refuse the connection: GOAWAY with `code` (unless h2 queued it already), count, report, close."""
        if self.closed:
            return False
        request_id = self._report(reason, message, "", 0)
        self._goaway = True
        debug = request_id.encode("ascii", "replace")[:64]
        if not sent:
            self._h2.clear_outbound_data_buffer()  # e.g. thousands of PING ACKs the flood asked for
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.close_connection(code, additional_data=debug)
        elif code == ErrorCodes.ENHANCE_YOUR_CALM:  # h2 queued its GOAWAY with another code: say what it was
            self._h2.clear_outbound_data_buffer()
            goaway = GoAwayFrame(0, last_stream_id=self._h2.highest_inbound_stream_id, error_code=code,
                                 additional_data=debug)
            if self._transport is not None:
                self._transport.write(goaway.serialize())
        self._send()
        for ex in list(self._streams.values()):
            self._gone(ex)
        self.close()
        return False

    def _report(self, reason: str, message: str, target: str, status: int) -> str:
        self.stats.count(reason)
        if self._on_error is None:
            return ""
        return self._on_error(self.peer, FramingError(status, reason, message), target[:200])

    # ---- streams ------------------------------------------------------------------------------------------

    async def _run(self, ex: H2Exchange) -> None:
        try:
            await self._handler(ex)
        except (ClientGone, ConnectionError):
            ex._aborted = True
        except Exception:  # the handler's own guard failed: never leave the stream hanging
            if not ex.response_started and not ex._ended:
                ex.problem(500, None, "")
            else:
                ex._aborted = True

    def _task_done(self, ex: H2Exchange, task: asyncio.Task[None]) -> None:
        # a done callback, not `finally`: a task cancelled before its first step never runs its body
        if task.cancelled():
            ex._aborted = True
        ex._handled = True
        if not ex._ended and not self.closed:
            if ex._aborted or not ex.response_started:
                self._reset(ex, ErrorCodes.CANCEL if ex._aborted else ErrorCodes.INTERNAL_ERROR)
            elif ex._declared is not None and ex._queued < ex._declared:
                self._reset(ex, ErrorCodes.INTERNAL_ERROR)  # shorter than its content-length: never "complete"
            else:
                ex._end_pending = True
                self.flush(ex)
        self._send()
        self._forget(ex)

    def _forget(self, ex: H2Exchange) -> None:
        """Drop a stream once its handler returned and its response is sent (or reset)."""
        if not (ex._handled and (ex._ended or self.closed)) or self._streams.get(ex.stream_id) is not ex:
            return
        del self._streams[ex.stream_id]
        if self.closed:
            return
        if not self._streams:
            if self._goaway:
                self.close()
            else:
                self._set_timer(self.limits.keepalive_timeout, self._idle_timeout)

    def _gone(self, ex: H2Exchange) -> None:
        """The client reset the stream (or the connection went): stop its handler and forget its output."""
        ex._ended = True
        ex._aborted = True
        ex._pending.clear()
        ex.body.fail(ClientGone())
        ex._drained()
        task = ex.task
        if task is not None and not task.done():
            task.cancel()  # frees the upstream at once: a reset stream costs its backend nothing more

    def _reset(self, ex: H2Exchange, code: int) -> None:
        ex._ended = True
        ex._aborted = True
        ex._pending.clear()
        ex._drained()
        with contextlib.suppress(h2.exceptions.H2Error):
            self._h2.reset_stream(ex.stream_id, code)
        if not ex.body.done:
            ex.body.fail(ClientGone())

    # ---- frames out ---------------------------------------------------------------------------------------

    def send_headers(self, ex: H2Exchange, fields: list[tuple[str, str]], *, end_stream: bool,
                     send: bool = True) -> None:
        if ex._ended or self.closed:
            return
        try:
            self._h2.send_headers(ex.stream_id, fields, end_stream=end_stream)
        except h2.exceptions.H2Error:  # e.g. a header value h2 refuses to send: the response cannot be given
            self._reset(ex, ErrorCodes.INTERNAL_ERROR)
            self._send()
            return
        ex._progress = self.loop.time()
        if end_stream:
            ex._ended = True
            self._end_request_side(ex)
        if send:
            self._send()

    def flush(self, ex: H2Exchange) -> None:
        """Send what the windows allow of `ex`'s pending response; end the stream once all is sent."""
        if ex._ended or self.closed:
            return
        h2c = self._h2
        sid = ex.stream_id
        try:
            while ex._pending:
                room = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size, len(ex._pending))
                if room <= 0:
                    break
                chunk = bytes(ex._pending[:room])
                del ex._pending[:room]
                last = not ex._pending and ex._end_pending and ex._trailers is None
                h2c.send_data(sid, chunk, end_stream=last)
                ex._progress = self.loop.time()
                if last:
                    ex._ended = True
            if not ex._pending and ex._end_pending and not ex._ended:
                if ex._trailers is not None:
                    h2c.send_headers(sid, ex._trailers, end_stream=True)
                else:
                    h2c.end_stream(sid)
                ex._ended = True
        except h2.exceptions.H2Error:
            ex._ended = True
            ex._pending.clear()
        if ex._ended:
            self._end_request_side(ex)
        elif len(ex._pending) > self.limits.max_send_buffer:
            self._reset(ex, ErrorCodes.CANCEL)
            self._report("h2_send_buffer_full", f"over {self.limits.max_send_buffer} response bytes waiting",
                         ex.target, 0)
        elif ex._pending:
            self._arm_watchdog()
        if len(ex._pending) < _HIGH_WATER:
            ex._drained()
        self._send()
        if ex._ended:
            self._forget(ex)

    def _end_request_side(self, ex: H2Exchange) -> None:
        if not ex.body.done:  # RFC 9113 §8.1: response complete, request body not needed: RST_STREAM NO_ERROR
            with contextlib.suppress(h2.exceptions.H2Error):
                self._h2.reset_stream(ex.stream_id, ErrorCodes.NO_ERROR)
            ex.body.fail(ClientGone())

    def _flush_all(self) -> None:
        for ex in list(self._streams.values()):
            if ex._pending or ex._end_pending:
                self.flush(ex)

    def ack(self, stream_id: int, flow: int) -> None:
        if flow and not self.closed:
            try:
                self._h2.acknowledge_received_data(flow, stream_id)
            except h2.exceptions.H2Error:
                return
            self._send()

    def send_queued(self) -> None:
        self._send()

    def _send(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # ---- zero-window stalls -------------------------------------------------------------------------------

    def _arm_watchdog(self) -> None:
        if self._watchdog is None and not self.closed:
            self._watchdog = self.loop.call_later(min(1.0, self.limits.stall_timeout / 2), self._check_stalls)

    def _check_stalls(self) -> None:
        self._watchdog = None
        now = self.loop.time()
        waiting = [ex for ex in self._streams.values() if ex._pending and not ex._ended]
        stalled = [ex for ex in waiting if now - ex._progress > self.limits.stall_timeout]
        for ex in stalled:
            self._reset(ex, ErrorCodes.CANCEL)
            self._report("h2_zero_window_stall", f"no window for {self.limits.stall_timeout:g}s", ex.target, 0)
            if ex.task is not None and not ex.task.done():
                ex.task.cancel()
        if stalled and len(stalled) == len(self._streams):
            self._send()  # the resets go before the GOAWAY
            self._refuse("h2_connection_stalled", "every stream stalled on a zero window",
                         ErrorCodes.ENHANCE_YOUR_CALM)
            return
        self._send()
        if len(waiting) > len(stalled):
            self._arm_watchdog()

    # ---- connection ---------------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._streams

    def shutdown(self) -> None:
        """Graceful: GOAWAY(NO_ERROR) now; streams in flight finish, then the connection closes."""
        if self.closed or self._goaway:
            return
        self._goaway = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(ErrorCodes.NO_ERROR)
        self._send()
        if not self._streams:
            self.close()

    def close(self) -> None:
        if not self.closed and self._transport is not None:
            if not self._goaway:
                self._goaway = True
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._h2.close_connection(ErrorCodes.NO_ERROR)
                self._send()
            self.closed = True
            self._cancel_timer()
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self.closed = True
            self._transport.abort()

    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle_timeout(self) -> None:
        self._timer = None
        if not self._streams:
            self.close()


_EARNED_PER_STREAM = {"window_update": 8, "ping": 2}
_RATE_LIMITS = {
    "reset": "max_resets", "refused": "max_refused", "settings": "max_settings", "ping": "max_pings",
    "priority": "max_priority", "window_update": "max_window_updates", "empty_frame": "max_empty_frames",
}
