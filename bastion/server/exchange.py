"""What HTTP/1.1 and HTTP/2 exchanges share: the request-body and answer helpers the proxy uses.

`Gateway.handle` runs unchanged on either protocol; each protocol's exchange implements the primitives
(`read_chunk`, `respond`, ...) and inherits these.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from bastion.http.headers import first_header
from bastion.http.problem import problem_body


def transport_peer(transport: asyncio.BaseTransport) -> tuple[str, bool, bytes | None]:
    """(peer address, over TLS, DER of the verified client certificate) of a new connection."""
    peer = transport.get_extra_info("peername")
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return (peer[0] if peer else ""), ssl_object is not None, cert


class ExchangeBase:
    """Helpers built on an exchange's primitives; `_conn` is the connection that carries it."""

    __slots__ = ()
    _conn: Any

    async def read_chunk(self) -> bytes:
        raise NotImplementedError

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool = False) -> None:
        raise NotImplementedError

    async def read_body(self) -> bytes:
        """The whole request body (bounded by the exchange's body limit)."""
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)

    def problem(self, status: int, detail: str | None, request_id: str,
                headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (), *, close: bool = False) -> None:
        """An RFC 9457 problem document as the whole response."""
        body = problem_body(status, detail, request_id)
        self.respond(status, [("content-type", "application/problem+json"), ("x-request-id", request_id),
                              ("cache-control", "no-store"), *headers], body, close=close)

    def header(self, name: str) -> str | None:
        """The first value of request header `name` (lower-case), or None."""
        return first_header(self.headers, name)  # type: ignore[attr-defined]

    @property
    def peer(self) -> str:
        return self._conn.peer  # type: ignore[no-any-return]

    @property
    def tls(self) -> bool:
        return self._conn.tls  # type: ignore[no-any-return]

    @property
    def peer_cert(self) -> bytes | None:
        return self._conn.peer_cert  # type: ignore[no-any-return]
