"""HTTP/1.1 server connection: parsing (httptools/llhttp, strict), framing checks, timeouts, response writing.

One `Http1Connection` per client connection runs one task that handles its requests in order. A request is
handed to the handler as an `Exchange` as soon as its head is parsed; its body is streamed on demand, with
back-pressure, and bounded by the limit the handler sets once it knows the route.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httptools

from bastion.http.budget import FramingBudget
from bastion.http.framing import FramingError, check_head
from bastion.http.problem import problem_body, status_line, status_phrase
from bastion.http.websocket import wants_websocket
from bastion.server.body import NO_BODY, BodyMalformed, BodyTimeout, BodyTooLarge, ClientGone, RequestBody
from bastion.server.deadlines import NEVER, deadlines
from bastion.server.exchange import ExchangeBase, transport_peer
from bastion.server.flow import WriteFlow

_READ_HIGH_WATER = 256 * 1024  # buffered request body above this pauses reading from the client


@dataclass(slots=True)
class ServerLimits:
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    min_body_rate: int = 0  # bytes/s a body must average once `min_body_rate_grace` has passed (0: off)
    min_body_rate_grace: float = 10.0


class H1Exchange(ExchangeBase):
    """One request and its response on an HTTP/1.1 client connection."""

    _conn: Http1Connection

    __slots__ = (
        "_conn",
        "_pending",
        "body",
        "chunked",
        "closed_after",
        "content_length",
        "expect_continue",
        "has_body",
        "headers",
        "keep_alive",
        "method",
        "response_started",
        "status",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self, conn: Http1Connection, method: str, target: str, version: str,
                 headers: list[tuple[str, str]], keep_alive: bool, content_length: int | None = None,
                 chunked: bool = False, expect_continue: bool = False) -> None:
        self._conn = conn
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # lower-case names
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.has_body = chunked or bool(content_length)
        # the connection, not the exchange, owns the body: no reference cycle, so an exchange is freed the
        # moment its handler is done with it (a cycle would leave every request to the garbage collector)
        self.body = RequestBody(conn, conn.body_idle_timeout) if self.has_body else NO_BODY
        self.response_started = False
        self.status = 0
        self.closed_after = False
        self._pending: bytes | None = None  # a response head held back to go out with the first body bytes
        self.upgrade: bytes | None = None  # a WebSocket upgrade held for the gateway: the bytes after its head

    # ---- request body -------------------------------------------------------------------------------------

    async def read_chunk(self) -> bytes:
        """The next piece of the body, or b"" at its end. Raises BodyTooLarge, BodyTimeout or ClientGone."""
        if self.expect_continue and not self.response_started:
            # RFC 9110 §10.1.1: the client waits for this before sending the body we now want
            self.expect_continue = False
            self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await self.body.read()

    def send_trailers(self, trailers: list[tuple[str, str]]) -> None:
        raise NotImplementedError("HTTP/1.1 responses carry no trailers here (gRPC needs HTTP/2)")

    # ---- response -----------------------------------------------------------------------------------------

    def start_response(self, status: int, headers: list[tuple[str, str]], *, length: int | None,
                       close: bool = False, defer: bool = False) -> bool:
        """Write the status line and headers. `length=None` means the body is chunked. Returns chunked.

        With `defer`, the head is held and sent in the same write as the first body bytes (or by `flush`):
        one send per small response instead of two.
        """
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1")
        return self.start_response_fields(status, fields, length=length, close=close, defer=defer)

    def start_response_fields(self, status: int, fields: bytes, *, length: int | None, close: bool = False,
                              defer: bool = False) -> bool:
        """`start_response` with the header fields already serialised (`name: value\r\n` each)."""
        self.response_started = True
        self.status = status
        if close:
            self.keep_alive = False
        bodiless = status in (204, 304) or self.method == "HEAD"
        chunked = length is None and self.version == "1.1" and not bodiless
        if length is not None:
            framing = b"content-length: %d\r\n" % length
        elif chunked:
            framing = b"transfer-encoding: chunked\r\n"
        else:
            framing = b""
            if not bodiless:
                self.keep_alive = False  # HTTP/1.0 client: the body ends when the connection closes
        if not self.keep_alive:
            framing += b"connection: close\r\n"
        elif self.version == "1.0":
            framing += b"connection: keep-alive\r\n"
        head = status_line(status) + fields + framing + b"\r\n"
        if defer:
            self._pending = head
        else:
            self._conn.write(head)
        return chunked

    def write(self, data: bytes) -> None:
        if self._pending is not None:
            data = self._pending + data
            self._pending = None
        self._conn.write(data)

    def flush(self) -> None:
        """Send a held-back response head now."""
        if self._pending is not None:
            self._conn.write(self._pending)
            self._pending = None

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool = False) -> None:
        """A complete response in one write."""
        self.start_response(status, headers, length=len(body), close=close, defer=True)
        self.write(body if self.method != "HEAD" else b"")

    @property
    def writable(self) -> bool:
        return self._conn.writable

    async def drain(self) -> None:
        await self._conn.drain()



Exchange = H1Exchange  # the name other modules import
Handler = Callable[[H1Exchange], Awaitable[None]]
ErrorHook = Callable[[str, FramingError, str], str]  # (peer, error, target) -> request id


class Http1Connection(asyncio.Protocol):
    """A client connection: parse requests, hand each to the handler, write responses."""

    def __init__(self, handler: Handler, limits: ServerLimits, registry: set[Http1Connection],
                 on_error: ErrorHook | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._handler = handler
        self._limits = limits
        self._registry = registry
        self._on_error = on_error
        self.body_idle_timeout = limits.body_idle_timeout
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._ready: collections.deque[H1Exchange] = collections.deque()
        self._ready_waiter: asyncio.Future[None] | None = None
        self._current: H1Exchange | None = None  # the exchange whose body the parser is feeding
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._budget = FramingBudget(limits.max_header_bytes)  # head bytes counted as they arrive
        self.deadline = NEVER  # loop time at which `_on_deadline` runs (swept by `Deadlines`)
        self._on_deadline: Callable[[], None] = _nothing
        self._deadlines = deadlines()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._paused_reading = False
        self._flow = WriteFlow(self.loop)
        self._in_request = False  # a request has begun and its head is not complete
        self._busy = False  # the handler is working on a request
        self._broken = False  # unparseable input arrived while busy: close after the current response
        self.peer = ""
        self.tls = False
        self.peer_cert: bytes | None = None
        self.tunnel: Callable[[bytes], None] | None = None  # an accepted WebSocket (server/websocket.py) owns the bytes

    # ---- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.peer, self.tls, self.peer_cert = transport_peer(transport)
        self._registry.add(self)
        limits = self._limits
        self._deadlines.add(self, min(limits.header_timeout, limits.body_idle_timeout, limits.keepalive_timeout))
        self._set_timer(self._limits.keepalive_timeout, self._idle_timeout)
        self._task = self.loop.create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._registry.discard(self)
        self._deadlines.discard(self)
        self.deadline = NEVER
        if self.tunnel is not None:
            self.tunnel(b"")  # end of stream for the WebSocket session
        gone = ClientGone()
        for exchange in (self._current, *self._ready):
            if exchange is not None:
                exchange.body.fail(gone)
        waiter = self._ready_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._flow.release(ClientGone())

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        start, size, budget = 0, len(data), self._budget
        try:
            while start < size and not self._closed:  # the parser sees what the budget allows: no unended line
                end = budget.take(data, start)
                if isinstance(end, FramingError):
                    self._reject(end)
                    return
                self._parser.feed_data(data if end == size and not start else memoryview(data)[start:end])
                start = end
        except httptools.HttpParserUpgrade as exc:
            last = self._ready[-1] if self._ready else None
            if last is not None and wants_websocket(last.headers):  # RFC 6455: the route decides (proxy)
                # the parser stopped after the head: what follows in this segment is the session's first bytes
                last.upgrade, last.keep_alive = data[start + exc.args[0]:], False
                self._pause_reading()
            else:
                self._reject(FramingError(400, "upgrade_not_supported", "protocol upgrade requested"))
        except httptools.HttpParserError as exc:
            if self._closed:
                return
            cause = exc.__context__  # httptools wraps an exception raised in a callback
            if isinstance(cause, _HeadTooLarge):
                self._reject(FramingError(431, "header_too_large", str(cause)))
            else:
                self._reject(FramingError(400, "malformed_request", f"parser: {exc}"))

    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
        self._flow.resume()

    # ---- httptools callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_request = True
        if not self._busy:
            self._set_timer(self._limits.header_timeout, self._header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(self._headers) > self._limits.max_headers:
            raise _HeadTooLarge(f"more than {self._limits.max_headers} header fields")

    def on_headers_complete(self) -> None:
        self._in_request = False
        parser = self._parser
        version = parser.get_http_version()
        error = check_head(version, self._headers)
        if error is not None:
            self._reject(error)
            return
        headers = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in self._headers]
        content_length: int | None = None
        chunked = expect_continue = False
        for name, value in headers:
            if name == "content-length":
                content_length = int(value)
            elif name == "transfer-encoding":
                chunked = True
            elif name == "expect" and value.lower() == "100-continue" and version == "1.1":
                expect_continue = True
        exchange = H1Exchange(self, parser.get_method().decode("ascii"), self._url.decode("latin-1"), version,
                              headers, parser.should_keep_alive(), content_length, chunked, expect_continue)
        self._budget.head_done(chunked, content_length)
        self._current = exchange
        self._ready.append(exchange)
        if not self._busy:
            self._cancel_timer()
        if len(self._ready) > 1:
            self._pause_reading()  # pipelined requests wait; we do not buffer without bound
        waiter = self._ready_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        exchange = self._current
        if exchange is not None:
            request_body = exchange.body
            request_body.feed(body)
            rate = self._limits.min_body_rate
            # slow-client protection: a trickled body is refused once the grace is over
            if rate and request_body.too_slow(self.loop.time(), rate, self._limits.min_body_rate_grace):
                request_body.fail(BodyTimeout())
            if request_body.buffered > _READ_HIGH_WATER:
                self._pause_reading()

    def on_message_complete(self) -> None:
        self._budget.message_done()
        exchange = self._current
        if exchange is not None:
            if not exchange.body.done:
                exchange.body.finish()
            self._current = None

    # ---- the request loop ---------------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while not self._closed:
                if not self._ready:
                    self._ready_waiter = self.loop.create_future()
                    await self._ready_waiter
                    self._ready_waiter = None
                    continue
                exchange = self._ready.popleft()
                self._busy = True
                try:
                    await self._handler(exchange)
                except (ClientGone, ConnectionError):
                    self.close()
                    return
                except Exception:  # the handler's own guard failed: never leave the client hanging
                    if not exchange.response_started and not self._closed:
                        exchange.problem(500, None, "", close=True)
                    self.close()
                    return
                finally:
                    self._busy = False
                if self._closed:
                    return
                if self._broken or not exchange.keep_alive or not exchange.body.complete:
                    # an unread body would be parsed as the next request: close instead
                    self.close()
                    return
                self._resume_reading()
                if not self._ready and not self._in_request:
                    self._set_timer(self._limits.keepalive_timeout, self._idle_timeout)
                elif self._in_request:
                    self._set_timer(self._limits.header_timeout, self._header_timeout)
        except asyncio.CancelledError:
            self.close()
            raise

    # ---- output and flow control --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    @property
    def writable(self) -> bool:
        return not self._flow.paused

    async def drain(self) -> None:
        if self._closed:
            raise ClientGone()
        await self._flow.wait()

    def body_read(self) -> None:
        """The handler read the buffered body (`RequestBody`'s owner): the client may send more."""
        self._resume_reading()

    def body_failed(self) -> None:
        pass  # the socket is closed once the handler is done (an unread body cannot be skipped)

    def _pause_reading(self) -> None:
        if not self._paused_reading and self._transport is not None and not self._closed:
            self._paused_reading = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._paused_reading and self._transport is not None and not self._closed and len(self._ready) <= 1:
            self._paused_reading = False
            self._transport.resume_reading()

    def close(self) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._cancel_timer()
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._closed = True
            self._transport.abort()

    @property
    def idle(self) -> bool:
        return not self._busy and not self._ready and not self._in_request

    # ---- timers and rejections ----------------------------------------------------------------------------

    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self.deadline = self.loop.time() + delay
        self._on_deadline = callback

    def _cancel_timer(self) -> None:
        self.deadline = NEVER

    def expire(self) -> None:
        self.deadline = NEVER
        self._on_deadline()

    def _idle_timeout(self) -> None:
        if self.idle:
            self.close()

    def _header_timeout(self) -> None:
        self._reject(FramingError(408, "header_timeout", "request head not received in time"))

    def _reject(self, error: FramingError) -> None:
        """Answer a request we will not parse further, and close: its framing cannot be trusted."""
        if self._closed:
            return
        if self._busy:
            # the handler owns the connection's response: fail the body it may read, close once it is done
            self._broken = True
            self._pause_reading()
            if self._current is not None:
                self._current.body.fail(BodyMalformed(error))
            return
        request_id = ""
        if self._on_error is not None:
            request_id = self._on_error(self.peer, error, self._url.decode("latin-1")[:200])
        body = problem_body(error.status, None, request_id)
        head = (f"HTTP/1.1 {error.status} {status_phrase(error.status)}\r\n"
                "content-type: application/problem+json\r\ncache-control: no-store\r\n"
                f"x-request-id: {request_id}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.write(head + body)
        self.close()


__all__ = ["BodyMalformed", "BodyTimeout", "BodyTooLarge", "ClientGone", "ErrorHook", "Exchange", "H1Exchange",
           "Handler", "Http1Connection", "ServerLimits"]


class _HeadTooLarge(Exception):
    pass


def _nothing() -> None:
    pass
