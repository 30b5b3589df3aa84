"""A real OCSP responder for tests: an asyncio HTTP/1.1 server answering POSTed requests with a callback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class Responder:
    """Counts requests; `answer(request_der) -> response_der` decides what to say."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.requests = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ocsp"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            body = await reader.readexactly(length)
            self.requests += 1
            der = self.answer(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(der) + der)
            await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def ocsp_responder(answer: Callable[[bytes], bytes]) -> AsyncIterator[Responder]:
    responder = Responder(answer)
    server = await asyncio.start_server(responder._serve, "127.0.0.1", 0)
    responder.port = server.sockets[0].getsockname()[1]
    try:
        yield responder
    finally:
        server.close()
        await server.wait_closed()
