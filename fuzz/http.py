"""HTTP/1.1 targets: the server connection as a conversation of bytes (head, bodies, chunked), and paths."""

from __future__ import annotations

import asyncio
import contextlib

import httptools

from bastion.router import AmbiguousPath, split_request_path
from bastion.server.http1 import BodyMalformed, BodyTimeout, BodyTooLarge, Exchange, Http1Connection, ServerLimits
from tests.server.memory import MemoryTransport

HEAD_LIMIT = 512
BODY_LIMIT = 1024
LIMITS = ServerLimits(max_header_bytes=HEAD_LIMIT, max_headers=16, header_timeout=60, body_idle_timeout=60,
                      keepalive_timeout=60)
_loop: asyncio.AbstractEventLoop | None = None


async def _handler(ex: Exchange) -> None:
    # RFC 9112 §5: whatever was accepted carries no CR, LF or NUL into what goes upstream
    for name, value in ex.headers:
        if any(c in value or c in name for c in "\r\n\x00"):
            raise AssertionError(f"control character in an accepted header {name!r}")
    if any(c in ex.target for c in "\r\n\x00 "):
        raise AssertionError(f"control character in an accepted target {ex.target!r}")
    ex.limit_body(BODY_LIMIT)
    try:
        body = await ex.read_body()
    except BodyTooLarge:
        return ex.problem(413, None, "", close=True)
    except (BodyMalformed, BodyTimeout):
        return ex.problem(400, None, "", close=True)
    if len(body) > BODY_LIMIT:
        raise AssertionError("a body over the limit was delivered")
    ex.respond(200, [("x-body", str(len(body)))], b"")


async def _converse(data: bytes, cuts: int) -> list[bytes]:
    out: list[bytes] = []
    errors: list[BaseException] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception") or
                                                                     RuntimeError(context["message"])))
    conn = Http1Connection(_handler, LIMITS, set())
    conn.connection_made(MemoryTransport(lambda data: out.append(bytes(data)), peer=("127.0.0.1", 1)))
    step = max(1, len(data) // cuts) if cuts else len(data) or 1
    for start in range(0, len(data), step):  # the same bytes in several segments: boundaries must not matter
        conn.data_received(data[start:start + step])
        for _ in range(3):
            await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    conn.connection_lost(None)
    task = conn._task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if errors:
        raise AssertionError(f"unhandled exception in the connection: {errors[0]!r}") from errors[0]
    return out


class _Statuses:
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.codes.append(self.parser.get_status_code())


def _run(data: bytes, cuts: int) -> list[int]:
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    out = b"".join(_loop.run_until_complete(_converse(data, cuts)))
    statuses = _Statuses()
    try:
        statuses.parser.feed_data(out)  # every answer is a well-formed response with a status
    except httptools.HttpParserError as exc:
        raise AssertionError(f"malformed response {out[:200]!r}") from exc
    for code in statuses.codes:
        if not 200 <= code <= 599:
            raise AssertionError(f"status {code}")
    return statuses.codes


def http1_head(data: bytes) -> None:
    """Raw bytes from a client: heads, pipelining, preambles; split into 1 to 8 segments."""
    cuts, data = (data[0] % 8, data[1:]) if data else (0, data)
    codes = _run(data, cuts)
    end = data.find(b"\r\n\r\n")
    if codes and codes[0] == 200 and (end < 0 or end + 4 > HEAD_LIMIT):
        raise AssertionError("a head over max_header_bytes was accepted")


_BODY_HEADS = (
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n",
)


def http1_body(data: bytes) -> None:
    """Bodies behind a fixed head: chunk sizes, extensions, trailers, Content-Length, what follows them."""
    if not data:
        return
    head = _BODY_HEADS[data[0] % len(_BODY_HEADS)]
    _run(head + data[1:], data[0] // len(_BODY_HEADS) % 6)


def path(data: bytes) -> None:
    """Request paths and percent-decoding: an accepted path has no separator, dot segment or NUL left in it."""
    text = data.decode("latin-1")
    try:
        segments = split_request_path("/" + text)
    except AmbiguousPath:
        return
    for seg in segments:
        if not seg or "/" in seg or "\\" in seg or "\x00" in seg or seg in (".", ".."):
            raise AssertionError(f"ambiguous segment {seg!r} accepted from {text!r}")
