"""The authz HTTP client against real sockets: framing, size cap, deadline, keep-alive reuse and recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from bastion.stages.authz.client import HttpClient, PeerError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    tasks: list[asyncio.Task[None]] = []

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def answering(*responses: bytes, close: bool = False) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
        if not close:
            await reader.read()
    return handle


FRAMING = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"a\": true}", 200, b'{"a": true}'),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n7\r\n: true}\r\n0\r\n\r\n", 200,
     b'{"a": true}'),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 404, b""),
]


@pytest.mark.parametrize(("response", "status", "body"), FRAMING)
async def test_framing(response: bytes, status: int, body: bytes) -> None:
    client = HttpClient()
    async with raw_server(answering(response)) as url:
        answer = await client.request("GET", f"{url}/x", timeout=1.0)
    assert (answer.status, answer.body) == (status, body)
    await client.close()


async def test_body_closed_by_eof() -> None:
    client = HttpClient()
    async with raw_server(answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}", close=True)) as url:
        answer = await client.request("GET", url, timeout=1.0)
    assert (answer.status, answer.body) == (200, b"{}")


BAD = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000, "larger than"),
    (b"NOT HTTP\r\n\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "mid-answer"),
]


@pytest.mark.parametrize(("response", "message"), BAD)
async def test_bad_answers_raise(response: bytes, message: str) -> None:
    client = HttpClient()
    async with raw_server(answering(response, close=True)) as url:
        with pytest.raises(PeerError, match=message):
            await client.request("GET", url, timeout=1.0, max_bytes=1024)


async def test_deadline_covers_a_peer_that_never_answers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    client = HttpClient()
    async with raw_server(silent) as url:
        with pytest.raises(PeerError, match="within 50ms"):
            await client.request("GET", url, timeout=0.05)


async def test_keep_alive_is_reused_and_a_stale_connection_is_replaced() -> None:
    connections = 0

    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        if connections == 1:  # the first connection serves a second request, then the peer drops it
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        await reader.read()

    client = HttpClient()
    async with raw_server(once_then_close) as url:
        for _ in range(2):
            assert (await client.request("POST", url, body=b"{}", timeout=1.0)).status == 200
        assert connections == 1
        # the peer closes its side; the next request notices and uses a new connection, transparently
        for conns in client._idle.values():
            for _, writer in conns:
                writer.transport.abort()
        await asyncio.sleep(0.01)
        assert (await client.request("GET", url, timeout=1.0)).status == 200
        assert connections == 2
    await client.close()


async def test_unreachable_and_non_http_urls() -> None:
    client = HttpClient()
    with pytest.raises(PeerError):
        await client.request("GET", "ftp://127.0.0.1/x", timeout=0.1)
    with pytest.raises(PeerError):
        await client.request("GET", "http://127.0.0.1:1/x", timeout=0.5)
