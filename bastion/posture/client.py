"""A tiny HTTP/1.1 client for the probe: one request per connection, exact bytes, bounded answers.

The probe sends requests a well-behaved client library would refuse to build (oversized bodies the server cuts
off, forged headers), and must survive a server that answers and closes before the body is sent. It is a CLI,
not the hot path, so one connection per request keeps every attack independent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 256 * 1024
EXPECT_CONTINUE_BYTES = 8192  # larger bodies wait for `100 Continue` (see `send`)
CONTINUE_WAIT = 1.0  # seconds: then the body goes anyway, as RFC 9110 §10.1.1 allows


@dataclass(frozen=True, slots=True)
class Target:
    """Where the gateway listens: `http://127.0.0.1:8080` or `https://gw.example.com:8443`."""

    scheme: str
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def parse(cls, url: str, *, cafile: str | None = None, insecure: bool = False) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"target must be an http:// or https:// URL, got {url!r}")
        context = None
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=cafile)
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return cls(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), context)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Response:
    status: int  # 0 when no HTTP answer came back
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""


async def send(target: Target, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"", *,
               host: str | None = None, timeout: float = 10.0) -> Response:
    """Send one request and read the answer; a body the server refused to read is not an error."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host or target.host}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(body)}")
    # RFC 9110 §10.1.1: a large body waits for `100 Continue`, so a server refusing it by its declared length
    # answers before any of it is sent; sent regardless, the unread body makes the server's close a TCP reset
    # that can destroy the answer (the oversized-body attack then saw "no HTTP response" under load)
    expect = len(body) > EXPECT_CONTINUE_BYTES
    if expect:
        head.append("Expect: 100-continue")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                target.host, target.port, ssl=target.ssl_context,
                server_hostname=target.host if target.ssl_context else None)
            try:
                writer.write(data)
                early = b""
                if expect:
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    early = await _interim(reader)
                with contextlib.suppress(ConnectionError):
                    if body and not early:
                        writer.write(body)
                    await writer.drain()
                raw = early + await _read_all(reader)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except TimeoutError:
        return Response(0, error="timeout")
    except (OSError, ssl.SSLError) as exc:
        return Response(0, error=f"{type(exc).__name__}: {exc}")
    return parse(raw)


async def _interim(reader: asyncio.StreamReader) -> bytes:
    """After `Expect: 100-continue`: b"" to send the body (100 came, or nothing within a second, RFC 9110
    §10.1.1), else the head of the final answer that came instead."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONTINUE_WAIT)
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return b""
    return b"" if head.startswith(b"HTTP/1.1 100") else head


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    with contextlib.suppress(ConnectionError):
        while size < MAX_RESPONSE_BYTES and (chunk := await reader.read(65536)):
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        return Response(0, error="no HTTP response")
    try:
        status = int(lines[0].split(" ")[1])
    except (IndexError, ValueError):
        return Response(0, error="malformed status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Response(status, headers, body)


def _dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2:]
    return b"".join(out)
