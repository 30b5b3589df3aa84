"""A small asyncio HTTP/1.1 client for the identity layer (JWKS, discovery, introspection).

One request per connection (`Connection: close`), a total timeout, a response size cap and no redirects: the
identity provider's documents are small, and following a redirect would let a compromised endpoint send us
anywhere. Responses are parsed by httptools, never by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools


class FetchError(Exception):
    """The request could not be completed (connect, timeout, size, framing)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete response: status, lower-cased headers (repeated ones joined by ", ") and body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class _Collector:
    """httptools callbacks: gathers headers and body, enforcing the size cap."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.headers_done = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_bytes:
            raise FetchError(f"response larger than {self.max_bytes} bytes")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _check_value(text: str) -> str:
    if any(c in text for c in "\r\n\0"):
        raise FetchError("header value contains a control character")
    return text


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes | None = None,
    timeout: float = 5.0,
    max_bytes: int = 1024 * 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpResponse:
    """Send one request and return the whole response. Raises FetchError on any failure."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"unsupported URL {url!r}")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    host_header = parts.netloc.rsplit("@", 1)[-1]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {_check_value(target)} HTTP/1.1", f"Host: {host_header}", "Connection: close",
             "Accept: application/json", "User-Agent: bastion"]
    lines += [f"{_check_value(k)}: {_check_value(v)}" for k, v in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    context = (ssl_context or ssl.create_default_context()) if https else None
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(parts.hostname, port, context, request, max_bytes)
    except FetchError:
        raise
    except (OSError, TimeoutError, ssl.SSLError, httptools.HttpParserError) as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from exc


async def _exchange(host: str, port: int, context: ssl.SSLContext | None, request: bytes,
                    max_bytes: int) -> HttpResponse:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=host if context else None, limit=64 * 1024)
    try:
        writer.write(request)
        await writer.drain()
        collector = _Collector(max_bytes)
        parser = httptools.HttpResponseParser(collector)
        received = 0
        while not collector.complete:
            data = await reader.read(65536)
            if not data:
                break
            received += len(data)
            if received > max_bytes + 64 * 1024:
                raise FetchError(f"response larger than {max_bytes} bytes")
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                raise FetchError("unexpected protocol upgrade") from exc
            except httptools.HttpParserCallbackError as exc:  # our own size cap, raised inside a callback
                raise FetchError(f"response larger than {max_bytes} bytes") from exc
        if not collector.complete:
            # A body delimited by the connection close is complete at EOF; anything else is truncated.
            delimited = "content-length" in collector.headers or "chunked" in collector.headers.get(
                "transfer-encoding", "")
            if not collector.headers_done or delimited:
                raise FetchError("connection closed before the response was complete")
        return HttpResponse(parser.get_status_code(), collector.headers, b"".join(collector.chunks))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
