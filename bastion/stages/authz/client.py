"""A small asyncio HTTP/1.1 client for the authorisation layer's peers (OPA, ownership services).

These calls sit on the request path, so: one deadline for the whole exchange (connect, send, answer), a cap on
the answer's size, no redirects, and a few idle keep-alive connections per peer so a decision costs one round
trip, not a TCP handshake. Responses are parsed by httptools, never by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools


class PeerError(Exception):
    """The peer could not be asked or did not answer properly (connect, timeout, size, framing)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


class _Reader:
    """httptools callbacks: collects the body under the size cap."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.keep_alive = False
        self.framed = False  # Content-Length or Transfer-Encoding given; else the body ends at EOF
        self.headers_done = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_bytes:
            raise PeerError(f"answer larger than {self.max_bytes} bytes")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        # llhttp resets its flags once the message is done: ask while still inside it
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HttpClient:
    """Requests to a few fixed peers; `max_idle` keep-alive connections are kept per peer."""

    def __init__(self, *, max_idle: int = 16, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._max_idle = max_idle
        self._ssl = ssl_context

    async def request(self, method: str, url: str, *, body: bytes | None = None, timeout: float,
                      max_bytes: int = 64 * 1024, content_type: str = "application/json") -> Answer:
        """One exchange within `timeout` seconds. Raises PeerError (TimeoutError included)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PeerError(f"not an http(s) URL: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:
            host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept: application/json",
                "User-Agent: bastion-authz"]
        if body is not None:
            head += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(key, data, max_bytes)
        except TimeoutError:
            raise PeerError(f"no answer from {parts.hostname}:{port} within {timeout * 1000:.0f}ms") from None
        except OSError as exc:
            raise PeerError(f"{parts.hostname}:{port}: {exc.strerror or exc}") from None

    async def _exchange(self, key: tuple[str, str, int], data: bytes, max_bytes: int) -> Answer:
        idle = self._idle.setdefault(key, [])
        while idle:  # a reused connection the peer closed meanwhile fails before any answer byte: try the next
            conn = idle.pop()
            if conn[1].is_closing() or conn[0].at_eof():
                conn[1].close()
                continue
            answer = await self._on(key, conn, data, max_bytes, reused=True)
            if answer is not None:
                return answer
        reader, writer = await asyncio.open_connection(
            key[1], key[2], ssl=(self._ssl or ssl.create_default_context()) if key[0] == "https" else None)
        answer = await self._on(key, (reader, writer), data, max_bytes, reused=False)
        if answer is None:
            raise PeerError(f"{key[1]}:{key[2]} closed the connection without an answer")
        return answer

    async def _on(self, key: tuple[str, str, int], conn: _Conn, data: bytes, max_bytes: int,
                  reused: bool) -> Answer | None:
        reader, writer = conn
        collected = _Reader(max_bytes)
        parser = collected.parser = httptools.HttpResponseParser(collected)
        received = False
        keep = False
        try:
            writer.write(data)
            await writer.drain()
            while not collected.complete:
                chunk = await reader.read(65536)
                if not chunk:
                    if not received and reused:
                        return None
                    if collected.headers_done and not collected.framed:
                        break  # RFC 9112 §6.3: no length given, the body ends when the connection does
                    raise PeerError(f"{key[1]}:{key[2]} closed the connection mid-answer")
                received = True
                try:
                    parser.feed_data(chunk)
                except httptools.HttpParserError as exc:
                    if isinstance(exc.__context__, PeerError):  # raised by a callback (the size cap)
                        raise exc.__context__ from None
                    raise PeerError(f"{key[1]}:{key[2]} sent a malformed answer: {exc}") from None
            keep = collected.keep_alive
            return Answer(parser.get_status_code(), b"".join(collected.chunks))
        except (ConnectionError, OSError):
            if not received and reused:
                return None
            raise
        finally:
            if keep and len(self._idle.setdefault(key, [])) < self._max_idle:
                self._idle[key].append(conn)
            else:
                writer.close()

    async def close(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        self._idle.clear()
