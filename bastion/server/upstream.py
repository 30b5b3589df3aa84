"""The upstream client: a bounded pool of keep-alive HTTP/1.1 connections per upstream.

Responses are parsed with httptools and streamed straight to the client connection from the parser's
callbacks: no task and no copy per chunk.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import httptools

from bastion.forwarding import Upstream
from bastion.http.budget import UPSTREAM_HEAD_BYTES, FramingBudget
from bastion.http.framing import FramingError
from bastion.server.deadlines import NEVER, deadlines
from bastion.server.flow import WriteFlow


class UpstreamError(Exception):
    """The upstream could not be used; `reason` is the stable code (`upstream_connect_failed`, ...)."""

    def __init__(self, reason: str, detail: str, *, status: int = 502, retryable: bool = False) -> None:
        super().__init__(detail)
        # set here, not as a class default: mypyc's compiled exception classes do not apply class defaults
        self.headers: tuple[tuple[str, str], ...] = ()  # for the client's answer, e.g. a pool's `Retry-After`
        self.reason = reason
        self.status = status
        self.retryable = retryable


class ResponseSink(Protocol):
    """Where a response goes: implemented by the proxy for one exchange (`server.response.ResponseSink`)."""

    paused: bool  # the client reads slower than the upstream sends (the upstream is paused, not stalled)

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_end(self) -> None: ...
    def flush(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection to an upstream; carries one request at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.loop = asyncio.get_running_loop()
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._sink: ResponseSink | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunked = False  # the response head being parsed has a Transfer-Encoding field
        self._budget = FramingBudget(pool.head_bytes)  # an unended head line is refused, not buffered
        self._done: asyncio.Future[None] | None = None
        self._head_seen = False
        self.deadline = NEVER  # for the response's head, then for each next piece of its body
        self._timeout = NEVER
        self._watched_for = NEVER  # the shortest timeout the sweep was told about
        self._deadlines = deadlines()
        self._received_any = False
        self._head_only = False
        self.closed = False
        self.reusable = False
        self._flow = WriteFlow(self.loop)

    # ---- protocol -----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self.deadline = NEVER
        self._deadlines.discard(self)
        self._pool._forget(self)
        if self._done is not None and not self._done.done():
            with contextlib.suppress(httptools.HttpParserError):  # a close-delimited body ends with the connection
                self._parser.feed_data(b"")
        error = UpstreamError("upstream_closed", "upstream closed the connection",
                              retryable=not self._received_any)
        _set_error(self._done, error)
        self._flow.release(error)

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        if self._head_seen:  # progress: the body-idle timeout starts again
            self.deadline = self.loop.time() + self._timeout
        if self._sink is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        start, size, budget = 0, len(data), self._budget
        try:
            while start < size:
                end = budget.take(data, start)
                if isinstance(end, FramingError):
                    self._fail(UpstreamError("upstream_head_too_large", f"upstream response: {end.message}"))
                    return
                self._parser.feed_data(data if end == size and not start else memoryview(data)[start:end])
                start = end
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("upstream_bad_response", f"malformed upstream response: {exc}"))
            return
        if self._sink is not None:  # a response still streaming: what this segment carried goes out now
            self._sink.flush()

    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
        self._flow.resume()

    # ---- httptools callbacks ------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(name) == 17 and name.lower() == b"transfer-encoding":  # the length first: most names differ
            self._chunked = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # interim responses are not forwarded (we never send Expect upstream)
            self._headers = []
            self._chunked = False
            return
        self._head_seen = True
        self._budget.head_done(self._chunked, None)
        sink = self._sink
        if sink is not None:
            sink.on_head(status, self._headers, self._parser.should_keep_alive())
        if self._head_only or status in (204, 304):
            # no body follows; the parser cannot know that for HEAD, so this connection is not reused
            self._complete(reusable=status in (204, 304) and self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self._sink is not None and not self._head_only:
            self._sink.on_body(body)

    def on_message_complete(self) -> None:
        self._budget.message_done()
        if self._done is not None and not self._done.done():
            self._complete(reusable=self._parser.should_keep_alive())

    # ---- use ----------------------------------------------------------------------------------------------

    def _complete(self, *, reusable: bool) -> None:
        self.reusable = reusable and not self.closed
        self.deadline = NEVER
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.on_end()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self.reusable = False
        self.deadline = NEVER
        _set_error(self._done, error)
        self.close()

    def begin(self, sink: ResponseSink, head_only: bool) -> asyncio.Future[None]:
        """Prepare for one response; returns the future of its end (set once the sink has all of it)."""
        self._sink = sink
        self._headers = []
        self._chunked = False
        self._head_only = head_only
        self._head_seen = False
        self._received_any = False
        # the parser is reused: llhttp resets after each complete message, and a connection whose response
        # did not complete cleanly is never reused
        self._done = self.loop.create_future()
        return self._done

    def expect_response(self, timeout: float) -> None:
        """The request is sent: its response's head must come within `timeout`, then no body gap may last longer
        (unless the client is the slow one: then the upstream is paused, not stalled)."""
        if timeout < self._watched_for:
            self._deadlines.add(self, timeout)
            self._watched_for = timeout
        self._timeout = timeout
        if self._done is not None and not self._done.done():
            self.deadline = self.loop.time() + timeout

    def expire(self) -> None:
        if self._done is None or self._done.done():
            self.deadline = NEVER
        elif not self._head_seen:
            self._fail(UpstreamError("upstream_timeout", "no response headers in time", status=504))
        elif self._sink is not None and self._sink.paused:
            self.deadline = self.loop.time() + self._timeout
        else:
            self._fail(UpstreamError("upstream_body_timeout", "upstream body stalled", status=504))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if not self.closed:
            await self._flow.wait()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class UpstreamPool:
    """At most `size` connections to one upstream; idle ones are reused most-recent first."""

    def __init__(self, upstream: Upstream, size: int, ssl_context: ssl.SSLContext | None = None,
                 idle_timeout: float = 30.0, head_bytes: int = UPSTREAM_HEAD_BYTES) -> None:
        self.upstream = upstream
        self.size = size
        self.head_bytes = head_bytes  # `gateway.limits.max_upstream_head_bytes`
        self._ssl = ssl_context
        self._idle: collections.deque[tuple[UpstreamConnection, float]] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle_timeout = idle_timeout
        self._clock: Callable[[], float] = time.monotonic

    def idle(self) -> UpstreamConnection | None:
        """A pooled connection ready for a request, if there is one (no await: the common case)."""
        now = self._clock()
        while self._idle:
            conn, since = self._idle.pop()
            if not conn.closed and now - since < self._idle_timeout:
                return conn
            conn.close()
        return None

    async def acquire(self, connect_timeout: float, fresh: bool = False) -> UpstreamConnection:
        if not fresh:
            pooled = self.idle()
            if pooled is not None:
                return pooled
        while self._open >= self.size:
            if len(self._waiters) >= self.size:  # never an unbounded queue in front of a saturated upstream
                raise UpstreamError("upstream_pool_exhausted", "upstream connection queue full", status=503)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(connect_timeout):
                    await waiter
            except TimeoutError:
                raise UpstreamError("upstream_pool_exhausted", "no upstream connection free in time",
                                    status=503) from None
            if self._idle and not fresh:
                conn, _ = self._idle.pop()
                if not conn.closed:
                    return conn
        self._open += 1
        loop = asyncio.get_running_loop()
        up = self.upstream
        # `asyncio.timeout`, not `wait_for`: wait_for runs each coroutine as a task of its own, so a connect took
        # about six turns of the loop (task, address, task, connect, two wake-ups), each as long as a full batch
        # of requests on a saturated gateway; here the address of an IP literal costs no turn and the connect one
        try:
            async with asyncio.timeout(connect_timeout):
                address = await self._address(loop)
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self), address, up.port, ssl=self._ssl,
                    server_hostname=(up.tls_server_name or up.host) if self._ssl else None)
        except UpstreamError:
            self._open -= 1
            self._wake()
            raise
        except TimeoutError:
            self._open -= 1
            self._wake()
            raise UpstreamError("upstream_connect_timeout", f"connect to {up.host}:{up.port} timed out",
                                status=504) from None
        except (OSError, ssl.SSLError) as exc:
            self._open -= 1
            self._wake()
            raise UpstreamError("upstream_connect_failed", f"connect to {up.host}:{up.port}: {exc}") from None
        return conn

    async def _address(self, loop: asyncio.AbstractEventLoop) -> str:
        """The address to connect to. A host *name* is resolved here (off the loop's thread) and refused when it
        points inside (private, loopback, link-local, metadata) unless the API allows it: SSRF through DNS, and
        rebinding between a check and the connect, both end here, as the checked address is the one used."""
        host = self.upstream.host
        try:
            ipaddress.ip_address(host)
            return host  # an IP literal in the config is the operator's explicit choice
        except ValueError:
            pass
        try:
            infos = await loop.getaddrinfo(host, self.upstream.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UpstreamError("upstream_dns_failed", f"resolve {host}: {exc}") from None
        address = str(infos[0][4][0])
        if not self.upstream.allow_private and internal_address(address):
            raise UpstreamError("upstream_internal_address", f"{host} resolves to internal address {address}; "
                                "set allow_private_upstream on the API if that is intended")
        return address

    def release(self, conn: UpstreamConnection) -> None:
        if conn.reusable and not conn.closed:
            self._idle.append((conn, self._clock()))
        else:
            conn.close()
        self._wake()

    def _forget(self, conn: UpstreamConnection) -> None:
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        while self._idle:
            conn, _ = self._idle.pop()
            conn.close()


_METADATA = (ipaddress.ip_network("169.254.169.254/32"), ipaddress.ip_network("fd00:ec2::254/128"),
             ipaddress.ip_network("100.100.100.200/32"))


def internal_address(address: str) -> bool:
    """Private, loopback, link-local, unspecified, reserved or cloud-metadata: not a place a name should lead."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_reserved
            or ip.is_multicast or any(ip in net for net in _METADATA))


def _set_error(fut: asyncio.Future[None] | None, error: Exception) -> None:
    """Fail a future that may or may not be awaited any more, without 'exception never retrieved' noise."""
    if fut is not None and not fut.done():
        fut.set_exception(error)
        fut.exception()  # marks it retrieved; an awaiting caller still gets the error

