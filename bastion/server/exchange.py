"""One request and its response, whatever protocol carried it: the `Exchange` protocol the proxy is written
against, and `ExchangeBase`, what HTTP/1.1 and HTTP/2 exchanges share (the request body and the answers built
on their primitives).

`Gateway.handle` runs unchanged on either protocol; each protocol's exchange implements the primitives
(`respond`, `start_response`, `write`, ...) and inherits the rest.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol

from bastion.http.headers import first_header
from bastion.http.problem import problem_body
from bastion.server.body import RequestBody

Fields = list[tuple[str, str]]


def transport_peer(transport: asyncio.BaseTransport) -> tuple[str, bool, bytes | None]:
    """(peer address, over TLS, DER of the verified client certificate) of a new connection."""
    peer = transport.get_extra_info("peername")
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return (peer[0] if peer else ""), ssl_object is not None, cert


class Exchange(Protocol):
    """What the proxy may do with one request and its response, on HTTP/1.1 or HTTP/2."""

    method: str
    target: str
    version: str  # "1.0", "1.1" or "2"
    headers: Fields  # lower-case names, in order
    content_length: int | None
    chunked: bool  # a body without a declared length (forwarded chunked to an HTTP/1.1 upstream)
    body: RequestBody
    response_started: bool
    status: int  # the status sent to the client (0 until the response starts)
    upgrade: bytes | None  # HTTP/1.1: a WebSocket upgrade held for the route, with the bytes after its head

    @property
    def keep_alive(self) -> bool: ...
    @keep_alive.setter
    def keep_alive(self, value: bool) -> None: ...
    @property
    def peer(self) -> str: ...
    @property
    def tls(self) -> bool: ...
    @property
    def peer_cert(self) -> bytes | None: ...
    has_body: bool  # a body follows the head (chunked, or a non-zero length)

    @property
    def body_complete(self) -> bool: ...
    @property
    def body_received(self) -> bool: ...
    @property
    def writable(self) -> bool: ...

    def limit_body(self, limit: int) -> None: ...
    async def read_chunk(self) -> bytes: ...
    async def read_body(self) -> bytes: ...
    def start_response(self, status: int, headers: Fields, *, length: int | None, close: bool = False,
                       defer: bool = False) -> bool: ...
    def write(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def respond(self, status: int, headers: Fields, body: bytes, *, close: bool = False) -> None: ...
    def problem(self, status: int, detail: str | None, request_id: str,
                headers: tuple[tuple[str, str], ...] | Fields = (), *, close: bool = False) -> None: ...
    def send_trailers(self, trailers: Fields) -> None: ...
    async def drain(self) -> None: ...


class Carrier(Protocol):
    """The connection an exchange travels on."""

    peer: str
    tls: bool
    peer_cert: bytes | None


class ExchangeBase:
    """The request body and the helpers built on an exchange's primitives; `_conn` carries the exchange."""

    __slots__ = ()
    _conn: Carrier
    body: RequestBody
    headers: Fields
    chunked: bool
    content_length: int | None
    has_body: bool  # set by the protocol when the head is parsed

    def respond(self, status: int, headers: Fields, body: bytes, *, close: bool = False) -> None:
        raise NotImplementedError

    # ---- request body -------------------------------------------------------------------------------------

    @property
    def body_complete(self) -> bool:
        """The whole body arrived and was read."""
        return self.body.complete

    @property
    def body_received(self) -> bool:
        """The whole body arrived (it may still be waiting to be read) and nothing went wrong with it."""
        return self.body.received

    def limit_body(self, limit: int) -> None:
        """Refuse the body once it passes `limit` bytes (including what already arrived)."""
        self.body.set_limit(limit)

    async def read_chunk(self) -> bytes:
        """The next piece of the body, or b"" at its end. Raises BodyTooLarge, BodyTimeout, BodyMalformed or
        ClientGone."""
        return await self.body.read()

    async def read_body(self) -> bytes:
        """The whole request body (bounded by the exchange's body limit)."""
        whole = self.body.whole()
        if whole is not None:  # all here already (and within the limit): no read to wait for
            return whole
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)

    # ---- answers ------------------------------------------------------------------------------------------

    def problem(self, status: int, detail: str | None, request_id: str,
                headers: tuple[tuple[str, str], ...] | Fields = (), *, close: bool = False) -> None:
        """An RFC 9457 problem document as the whole response."""
        body = problem_body(status, detail, request_id)
        self.respond(status, [("content-type", "application/problem+json"), ("x-request-id", request_id),
                              ("cache-control", "no-store"), *headers], body, close=close)

    def header(self, name: str) -> str | None:
        """The first value of request header `name` (lower-case), or None."""
        return first_header(self.headers, name)

    @property
    def peer(self) -> str:
        return self._conn.peer

    @property
    def tls(self) -> bool:
        return self._conn.tls

    @property
    def peer_cert(self) -> bytes | None:
        return self._conn.peer_cert
