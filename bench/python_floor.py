"""The floor for any Python proxy on this machine: the least a raw-protocol proxy can do, measured beside Bastion.

    python bench/python_floor.py LISTEN_PORT UPSTREAM_PORT

uvloop, an `asyncio.Protocol` server parsing with httptools, one task per request, and a keep-alive pool of
upstream connections of its own: the stack Bastion is built on, with nothing else. No framing checks, no
timeouts, no header hygiene, no routing, no metrics: it is not a proxy anyone should run, only the bound that
tells how much of Bastion's CPU time per request is the language and the event loop, and how much is Bastion.
"""

from __future__ import annotations

import asyncio
import collections
import sys

import httptools
import uvloop

_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})


class UpstreamConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers, self.body = [], []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed"))


class Pool:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: collections.deque[UpstreamConnection] = collections.deque()

    async def request(self, head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        loop = asyncio.get_running_loop()
        while self.idle and self.idle[-1].closed:  # the upstream closed it while it sat idle (between rounds)
            self.idle.pop()
        conn = self.idle.pop() if self.idle else (await loop.create_connection(UpstreamConnection, "127.0.0.1",
                                                                               self.port))[1]
        conn.waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(head)
        answer = await conn.waiter
        self.idle.append(conn)
        return answer


class ClientConnection(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self.forward(self.parser.get_method(), self.url, self.headers,
                                                            b"".join(self.body)))

    async def forward(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        lines = [method + b" " + url + b" HTTP/1.1\r\n"]
        lines.extend(name + b": " + value + b"\r\n" for name, value in headers if name.lower() not in _HOP)
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        status, answer_headers, answer = await self.pool.request(b"".join(lines) + body)
        out = [b"HTTP/1.1 %d OK\r\n" % status]
        out.extend(name + b": " + value + b"\r\n" for name, value in answer_headers if name.lower() not in _HOP)
        out.append(b"content-length: %d\r\n\r\n" % len(answer))
        assert self.transport is not None
        self.transport.write(b"".join(out) + answer)


async def serve(listen_port: int, upstream_port: int) -> None:
    pool = Pool(upstream_port)
    server = await asyncio.get_running_loop().create_server(lambda: ClientConnection(pool), "127.0.0.1",
                                                            listen_port, backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
