"""The response side of the proxy: an upstream response streamed to the client as it is parsed.

Hop-by-hop and software-revealing headers are dropped, the request id and trace context added, and a slow client
pauses the upstream (back-pressure) instead of making the gateway buffer the response.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from bastion.context import RequestContext
from bastion.http.headers import response_fields, response_headers
from bastion.server.exchange import Exchange
from bastion.server.http1 import H1Exchange

_SLOW_READER_TIMEOUT = 60.0  # seconds a client may leave a response unread before the transfer is abandoned


class UpstreamReader(Protocol):
    """What the sink does to the upstream connection: pause it for a slow client, resume it, or give it up
    (`server.upstream.UpstreamConnection`; by structure, so tests can hand the sink a transport)."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class ResponseSink:
    """Streams one upstream response to the client as it is parsed.

    With a route's response filter (contract filtering, 5xx rewriting, security headers, CORS), the filter
    decides per response: stream it with its headers adjusted, buffer the body (bounded) to filter it, or
    replace it (the upstream body is then read and dropped, so the connection stays reusable).
    """

    __slots__ = (
        "_chunked",
        "_conn",
        "_ctx",
        "_discard",
        "_ex",
        "_filter",
        "_h1",
        "_held",
        "_held_len",
        "_length",
        "_plan",
        "_trace",
        "_wire",
        "paused",
        "status",
    )

    def __init__(self, ex: Exchange, ctx: RequestContext, traceparent: str, conn: UpstreamReader,
                 response_filter: Any = None) -> None:
        self._ex = ex
        # HTTP/1.1: framing and the held-back head are ours to write (HTTP/2 frames the body itself)
        self._wire = ex if type(ex) is H1Exchange else None
        self._h1 = self._wire is not None
        self._ctx = ctx
        self._trace = traceparent
        self._conn = conn
        self._filter = response_filter
        self._plan: Any = None
        self._held: list[bytes] | None = None
        self._held_len = 0
        self._discard = False
        self._length: int | None = None
        self._chunked = False
        self.status = 0  # the upstream's status (what was sent is `ex.status`)
        self.paused = False  # the client reads slower than the upstream sends: upstream reading is paused

    def on_head(self, status: int, raw: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self.status = status
        wire = self._wire
        if wire is not None and status not in (204, 304) and wire.method != "HEAD":
            # the common case, on bytes: no decoding, no lists of pairs
            filt = self._filter
            ctx = self._ctx
            forwarded = response_fields(raw) if filt is None else filt.stream_fields(ctx, status, raw, self._ex.tls)
            if forwarded is not None:
                length, fields = forwarded
                fields += f"x-request-id: {ctx.request_id}\r\ntraceparent: {self._trace}\r\n".encode("latin-1")
                if ctx.response_headers:
                    fields += "".join([f"{n}: {v}\r\n" for n, v in ctx.response_headers]).encode("latin-1")
                self._chunked = wire.start_response_fields(status, fields, length=length, defer=True)
                return
        decoded = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in raw]
        if self._filter is None:
            length, headers = response_headers(decoded)
            self._start(status, headers, length)
            return
        self._length = _content_length(decoded)
        plan = self._plan = self._filter.head(self._ctx, status, decoded, self._ex.tls)
        if plan.action == "replace":
            self._discard = True
            self._send_whole(plan.status, plan.headers, plan.body)
        elif plan.action == "buffer":
            self._held = []
        else:
            self._start(plan.status, plan.headers, self._length)

    def _start(self, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        if self._ex.method == "HEAD" or status in (204, 304):
            if length is not None:
                headers = [*headers, ("content-length", str(length))]
            length = 0 if status in (204, 304) or length is None else None
        headers = [*headers, ("x-request-id", self._ctx.request_id), ("traceparent", self._trace),
                   *self._ctx.response_headers]
        # HTTP/1.1: hold the head back to leave in one send with the body (other protocols frame it themselves)
        defer = {"defer": True} if self._h1 else {}
        if self._ex.method == "HEAD" and length is None:
            self._ex.start_response(status, headers, length=None, **defer)
            return
        self._chunked = self._ex.start_response(status, headers, length=length, **defer)

    def _send_whole(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._start(status, headers, len(body))
        self._ex.write(body if self._ex.method != "HEAD" else b"")
        self.flush()

    def on_body(self, data: bytes) -> None:
        if self._discard:
            return
        held = self._held
        if held is not None:
            plan = self._plan
            self._held_len += len(data)
            if self._held_len <= plan.max_bytes:
                held.append(data)
                return
            self._held = None
            answer = self._filter.overflow(self._ctx, plan)
            if answer is not None:  # too large to filter and the policy blocks: a 502 instead
                self._discard = True
                self._send_whole(*answer)
                return
            self._start(plan.status, plan.headers, self._length)
            for chunk in held:
                self._write(chunk)
        self._write(data)

    def _write(self, data: bytes) -> None:
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
        if self._held is not None:
            plan = self._plan
            held = self._held
            self._held = None
            self._send_whole(*self._filter.body(self._ctx, plan.status, plan.headers, b"".join(held)))
            return
        if self._discard:
            return
        if self._chunked:
            self._ex.write(b"0\r\n\r\n")
        elif self._h1:
            self._ex.flush()

    def flush(self) -> None:
        if self._h1 and self._held is None:
            self._ex.flush()


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name == "content-length":
            return int(value) if value.isdigit() else None
    return None
