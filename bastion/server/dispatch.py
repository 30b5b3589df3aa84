"""Which protocol a client connection speaks: HTTP/2 (TLS ALPN "h2", or cleartext prior knowledge when the
listener allows h2c) or HTTP/1.1. The chosen protocol object takes the transport over; nothing sits between
them afterwards, so HTTP/1.1 pays nothing per request for the choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from bastion.server.exchange import Exchange
from bastion.server.http1 import ErrorHook, Http1Connection, ServerLimits
from bastion.server.http2 import PREFACE, H2Connection, H2Limits, H2Stats

ALPN = ["h2", "http/1.1"]
# one handler for both protocols: mypy checks that HTTP/1.1 and HTTP/2 exchanges both are an `Exchange`
ExchangeHandler = Callable[[Exchange], Awaitable[None]]


def alpn(context: ssl.SSLContext) -> None:
    """Offer HTTP/2 on a TLS listener (RFC 9113 §3.2), falling back to HTTP/1.1."""
    context.set_alpn_protocols(ALPN)


def protocol_factory(handler: ExchangeHandler, limits: ServerLimits, registry: set[Any], on_error: ErrorHook | None,
                     *, h2c: bool, h2_limits: H2Limits | None = None,
                     stats: H2Stats | None = None) -> Callable[[], asyncio.Protocol]:
    """A `loop.create_server` factory that serves HTTP/2 and HTTP/1.1 on one listener."""
    h2_limits = h2_limits or H2Limits.derive(limits)
    stats = stats or H2Stats()

    def http1() -> Http1Connection:
        return Http1Connection(handler, limits, registry, on_error)

    def http2() -> H2Connection:
        return H2Connection(handler, h2_limits, registry, on_error, stats=stats)

    return lambda: _Negotiation(http1, http2, h2c, limits.header_timeout)


class _Negotiation(asyncio.Protocol):
    """Lives until the protocol is known, then hands the transport to it."""

    def __init__(self, http1: Callable[[], Http1Connection], http2: Callable[[], H2Connection], h2c: bool,
                 timeout: float) -> None:
        self._http1 = http1
        self._http2 = http2
        self._h2c = h2c
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._seen = b""
        self._timer: asyncio.TimerHandle | None = None
        self._chosen: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is not None:  # the TLS handshake is done: ALPN has chosen
            self._hand_over(self._http2() if ssl_object.selected_alpn_protocol() == "h2" else self._http1())
        elif not self._h2c:
            self._hand_over(self._http1())
        else:  # cleartext: the first bytes tell (RFC 9113 §3.3 prior knowledge); a silent client is closed
            self._timer = asyncio.get_running_loop().call_later(self._timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._chosen is not None:  # a transport without set_protocol: forward
            self._chosen.data_received(data)
            return
        self._seen += data
        size = min(len(self._seen), len(PREFACE))
        if self._seen[:size] != PREFACE[:size]:
            self._hand_over(self._http1(), self._seen)
        elif size == len(PREFACE):
            self._hand_over(self._http2(), self._seen)

    def eof_received(self) -> bool | None:
        if self._chosen is not None:
            return self._chosen.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._chosen is not None:
            self._chosen.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._chosen is not None:
            self._chosen.pause_writing()

    def resume_writing(self) -> None:
        if self._chosen is not None:
            self._chosen.resume_writing()

    def _hand_over(self, protocol: asyncio.Protocol, replay: bytes = b"") -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        if transport is None:
            return
        self._chosen = protocol
        with contextlib.suppress(NotImplementedError):  # without set_protocol, this object keeps forwarding
            transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if replay:
            protocol.data_received(replay)
