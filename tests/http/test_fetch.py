"""The small asyncio HTTP client: framing, size cap, timeout, no redirects, TLS (trustme)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import pytest
import trustme

from bastion.http.fetch import FetchError, fetch

Reply = Callable[[bytes], bytes]


async def serve(reply: bytes, delay: float = 0.0,
                tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            await asyncio.sleep(delay)
            writer.write(reply)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1], seen


@pytest.fixture
async def servers() -> AsyncIterator[list[asyncio.Server]]:
    started: list[asyncio.Server] = []
    yield started
    for server in started:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("reply", "status", "body"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\nhello", 200, b"hello"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", 200, b"hello"),
    (b"HTTP/1.1 200 OK\r\n\r\nhello", 200, b"hello"),  # delimited by the close
    (b"HTTP/1.1 302 Found\r\nLocation: http://evil/\r\nContent-Length: 0\r\n\r\n", 302, b""),  # not followed
])
async def test_framing(servers: list[asyncio.Server], reply: bytes, status: int, body: bytes) -> None:
    server, port, seen = await serve(reply)
    servers.append(server)
    response = await fetch(f"http://127.0.0.1:{port}/jwks.json?x=1")
    assert (response.status, response.body) == (status, body)
    assert seen[0].startswith(b"GET /jwks.json?x=1 HTTP/1.1\r\n") and b"Connection: close" in seen[0]


@pytest.mark.parametrize(("reply", "delay", "error"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, 0.0, "larger"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 0.0, "closed before"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0.4, "Timeout"),
    (b"garbage\r\n\r\n", 0.0, "HttpParser"),
])
async def test_failures(servers: list[asyncio.Server], reply: bytes, delay: float, error: str) -> None:
    server, port, _ = await serve(reply, delay)
    servers.append(server)
    with pytest.raises(FetchError, match=error):
        await fetch(f"http://127.0.0.1:{port}/", max_bytes=1024, timeout=0.2)
    await asyncio.sleep(delay)  # let the slow handler finish before the server goes away


async def test_header_injection_refused() -> None:
    with pytest.raises(FetchError):
        await fetch("http://127.0.0.1:9/", headers=(("X-A", "b\r\nX-Evil: 1"),))


async def test_https_with_verification(servers: list[asyncio.Server]) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server, port, _ = await serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", tls=server_ctx)
    servers.append(server)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    assert (await fetch(f"https://127.0.0.1:{port}/", ssl_context=client_ctx)).body == b"ok"
    with pytest.raises(FetchError):  # an unknown CA is refused
        await fetch(f"https://127.0.0.1:{port}/", ssl_context=ssl.create_default_context())
    await asyncio.sleep(0.1)  # let the server side finish its failed handshake


@pytest.mark.parametrize(("name", "reply", "ok"), [
    ("body_at_limit", b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024, True),
    ("body_one_over", b"HTTP/1.1 200 OK\r\nContent-Length: 1025\r\n\r\n" + b"x" * 1025, False),
    ("close_delimited_one_over", b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1025, False),
    ("endless_header_line", b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (200 * 1024), False),
])
async def test_jwks_introspection_and_ssf_fetches_stop_one_byte_over(servers: list[asyncio.Server], name: str,
                                                                      reply: bytes, ok: bool) -> None:
    server, port, _ = await serve(reply)
    servers.append(server)
    if ok:
        assert len((await fetch(f"http://127.0.0.1:{port}/", max_bytes=1024)).body) == 1024
    else:
        with pytest.raises(FetchError, match="larger"):
            await fetch(f"http://127.0.0.1:{port}/", max_bytes=1024)
