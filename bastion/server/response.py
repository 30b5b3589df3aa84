"""The response side of the proxy: an upstream response streamed to the client as it is parsed.

Hop-by-hop and software-revealing headers are dropped, the request id and trace context added, and a slow client
pauses the upstream (back-pressure) instead of making the gateway buffer the response.
"""

from __future__ import annotations

import asyncio

from bastion.context import RequestContext
from bastion.http.headers import HOP_BY_HOP
from bastion.server.http1 import Exchange
from bastion.server.upstream import UpstreamConnection, UpstreamError

_SLOW_READER_TIMEOUT = 60.0  # seconds a client may leave a response unread before the transfer is abandoned
# Response headers that describe the upstream's software: an attacker's map, never forwarded.
_RESPONSE_DROP = frozenset({"server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version"})


class ResponseSink:
    """Streams one upstream response to the client as it is parsed."""

    __slots__ = ("_chunked", "_conn", "_ctx", "_ex", "_h1", "_trace", "paused", "progress", "status")

    def __init__(self, ex: Exchange, ctx: RequestContext, traceparent: str, conn: UpstreamConnection) -> None:
        self._ex = ex
        self._h1 = type(ex) is Exchange
        self._ctx = ctx
        self._trace = traceparent
        self._conn = conn
        self._chunked = False
        self.status = 0
        self.progress = 0
        self.paused = False  # the client reads slower than the upstream sends: upstream reading is paused

    def on_head(self, status: int, raw: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self.status = status
        headers: list[tuple[str, str]] = []
        length: int | None = None
        drop: set[str] = set()
        decoded = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in raw]
        for name, value in decoded:
            if name == "connection":
                drop.update(t.strip().lower() for t in value.split(","))
        for name, value in decoded:
            if name == "content-length":
                length = int(value) if value.isdigit() else None
                continue
            if name in HOP_BY_HOP or name in drop or name in _RESPONSE_DROP or name == "x-request-id":
                continue
            headers.append((name, value))
        if self._ex.method == "HEAD" or status in (204, 304):
            if length is not None:
                headers.append(("content-length", str(length)))
            length = 0 if status in (204, 304) or length is None else None
        headers.append(("x-request-id", self._ctx.request_id))
        headers.append(("traceparent", self._trace))
        headers.extend(self._ctx.response_headers)
        # HTTP/1.1: hold the head back to leave in one send with the body (other protocols frame it themselves)
        defer = {"defer": True} if self._h1 else {}
        if self._ex.method == "HEAD" and length is None:
            self._ex.start_response(status, headers, length=None, **defer)
            return
        self._chunked = self._ex.start_response(status, headers, length=length, **defer)

    def on_body(self, data: bytes) -> None:
        self.progress += len(data)
        if self._chunked:
            self._ex.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._ex.write(data)
        if not self.paused and not self._ex.writable:
            # back-pressure: a slow client must not make the gateway buffer the upstream's whole response
            self.paused = True
            self._conn.pause_reading()
            asyncio.get_running_loop().create_task(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        try:
            # a client that stops reading for this long is a slow-read attack, not a slow network
            await asyncio.wait_for(self._ex.drain(), _SLOW_READER_TIMEOUT)
        except Exception:  # gone or stalled: close the upstream side; the request ends as an aborted response
            self._conn.close()
            return
        finally:
            self.paused = False
        self._conn.resume_reading()

    def on_end(self) -> None:
        if self._chunked:
            self._ex.write(b"0\r\n\r\n")
        elif self._h1:
            self._ex.flush()

    def flush(self) -> None:
        if self._h1:
            self._ex.flush()


async def wait_progress(fut: asyncio.Future[None], sink: ResponseSink, idle: float) -> None:
    """Wait for the end of the response body; fail only when no byte arrived for `idle` seconds."""
    while not fut.done():
        seen = sink.progress
        done, _ = await asyncio.wait((fut,), timeout=idle)
        if not done and sink.progress == seen and not sink.paused:  # paused: the client is slow, not the upstream
            raise UpstreamError("upstream_body_timeout", "upstream body stalled", status=504)
    fut.result()
