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
from bastion.server.deadlines import NEVER, deadlines
from bastion.server.exchange import ExchangeBase, transport_peer

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


class BodyTooLarge(Exception):
    """The request body passed the route's limit."""


class BodyTimeout(Exception):
    """The client stopped sending its body."""


class ClientGone(Exception):
    """The client closed the connection."""


class BodyMalformed(Exception):
    """The request body's framing was invalid (e.g. a bad chunk size)."""

    def __init__(self, error: FramingError) -> None:
        super().__init__(error.message)
        self.error = error


class Exchange(ExchangeBase):
    """One request and its response on a client connection."""

    __slots__ = (
        "_body_done",
        "_body_error",
        "_body_seen",
        "_body_started",
        "_chunks",
        "_conn",
        "_pending",
        "_waiter",
        "body_limit",
        "chunked",
        "closed_after",
        "content_length",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "response_started",
        "status",
        "target",
        "version",
    )

    def __init__(self, conn: Http1Connection, method: str, target: str, version: str,
                 headers: list[tuple[str, str]], keep_alive: bool) -> None:
        self._conn = conn
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # lower-case names
        self.keep_alive = keep_alive
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.body_limit: int | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._body_done = False
        self._body_seen = 0
        self._body_started = 0.0
        self._body_error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.response_started = False
        self.status = 0
        self.closed_after = False
        self._pending: bytes | None = None  # a response head held back to go out with the first body bytes

    # ---- request body -------------------------------------------------------------------------------------

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def body_complete(self) -> bool:
        """The whole body arrived and was read."""
        return self._body_done and not self._chunks

    @property
    def body_received(self) -> bool:
        """The whole body arrived (it may still be waiting to be read) and nothing went wrong with it."""
        return self._body_done and self._body_error is None

    def limit_body(self, limit: int) -> None:
        """Refuse the body once it passes `limit` bytes (including what already arrived)."""
        self.body_limit = limit
        if self._body_seen > limit:
            self._chunks.clear()
            self._fail(BodyTooLarge())

    def _feed(self, data: bytes) -> None:
        self._body_seen += len(data)
        if self.body_limit is not None and self._body_seen > self.body_limit:
            self._fail(BodyTooLarge())
            return
        self._chunks.append(data)
        self._wake()

    def _finish(self) -> None:
        self._body_done = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self._body_error is None:
            self._body_error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_chunk(self) -> bytes:
        """The next piece of the body, or b"" at its end. Raises BodyTooLarge, BodyTimeout or ClientGone."""
        if self.expect_continue and not self.response_started:
            self.expect_continue = False
            self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            if self._body_error is not None:
                raise self._body_error
            if self._chunks:
                data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
                self._chunks.clear()
                self._conn.body_drained()
                return data
            if self._body_done:
                return b""
            self._waiter = self._conn.loop.create_future()
            self._conn.arm_body_timer()
            try:
                await self._waiter
            finally:
                self._waiter = None

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



Handler = Callable[[Exchange], Awaitable[None]]
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
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._ready: collections.deque[Exchange] = collections.deque()
        self._ready_waiter: asyncio.Future[None] | None = None
        self._current: Exchange | None = None  # the exchange whose body the parser is feeding
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._budget = FramingBudget(limits.max_header_bytes)  # head bytes counted as they arrive
        self.deadline = NEVER  # loop time at which `_on_deadline` runs (swept by `Deadlines`)
        self._on_deadline: Callable[[], None] = _nothing
        self._deadlines = deadlines()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._paused_reading = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._in_request = False  # a request has begun and its head is not complete
        self._busy = False  # the handler is working on a request
        self._broken = False  # unparseable input arrived while busy: close after the current response
        self.peer = ""
        self.tls = False
        self.peer_cert: bytes | None = None

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
        gone = ClientGone()
        for exchange in (self._current, *self._ready):
            if exchange is not None:
                exchange._fail(gone)
        waiter = self._ready_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(ClientGone())

    def data_received(self, data: bytes) -> None:
        view, start = memoryview(data), 0
        try:
            while start < len(data) and not self._closed:  # the parser sees what the budget allows: no unended line
                end = self._budget.take(data, start)
                if isinstance(end, FramingError):
                    self._reject(end)
                    return
                self._parser.feed_data(view[start:end] if start or end < len(data) else data)
                start = end
        except httptools.HttpParserUpgrade:
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
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
        exchange = Exchange(self, parser.get_method().decode("ascii"), self._url.decode("latin-1"), version,
                            headers, parser.should_keep_alive())
        for name, value in headers:
            if name == "content-length":
                exchange.content_length = int(value)
            elif name == "transfer-encoding":
                exchange.chunked = True
            elif name == "expect" and value.lower() == "100-continue" and version == "1.1":
                exchange.expect_continue = True
        if not exchange.has_body:
            exchange._body_done = True
        self._budget.head_done(chunked=exchange.chunked, content_length=exchange.content_length)
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
            exchange._feed(body)
            rate = self._limits.min_body_rate
            if rate:  # slow-client protection: a trickled body is refused once the grace is over
                now = self.loop.time()
                if not exchange._body_started:
                    exchange._body_started = now
                elapsed = now - exchange._body_started
                if elapsed > self._limits.min_body_rate_grace and exchange._body_seen < rate * elapsed:
                    exchange._fail(BodyTimeout())
            if self.deadline != NEVER and self._busy:
                self.arm_body_timer()
            if len(exchange._chunks) and sum(map(len, exchange._chunks)) > _READ_HIGH_WATER:
                self._pause_reading()

    def on_message_complete(self) -> None:
        self._budget.message_done()
        exchange = self._current
        if exchange is not None:
            exchange._finish()
            self._current = None
        if self._busy:
            self._cancel_timer()

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
                if self._broken or not exchange.keep_alive or not exchange.body_complete:
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
        return not self._write_paused

    async def drain(self) -> None:
        if self._closed:
            raise ClientGone()
        if self._write_paused:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def body_drained(self) -> None:
        self._resume_reading()

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

    def arm_body_timer(self) -> None:
        self._set_timer(self._limits.body_idle_timeout, self._body_timeout)

    def _idle_timeout(self) -> None:
        if self.idle:
            self.close()

    def _header_timeout(self) -> None:
        self._reject(FramingError(408, "header_timeout", "request head not received in time"))

    def _body_timeout(self) -> None:
        if self._current is not None:
            self._current._fail(BodyTimeout())

    def _reject(self, error: FramingError) -> None:
        """Answer a request we will not parse further, and close: its framing cannot be trusted."""
        if self._closed:
            return
        if self._busy:
            # the handler owns the connection's response: fail the body it may read, close once it is done
            self._broken = True
            self._pause_reading()
            if self._current is not None:
                self._current._fail(BodyMalformed(error))
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


class _HeadTooLarge(Exception):
    pass


def _nothing() -> None:
    pass
