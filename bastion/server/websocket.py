"""WebSocket sessions (RFC 6455) behind the same controls as every request.

The upgrade request has run the whole pipeline (identity, authorisation, rate limits, IP rules) when `relay`
gets it. `relay` forwards the handshake to the upstream, checks its answer, answers the client 101 and then
relays frames both ways with the route's limits. Frames are parsed and re-framed by the `websockets` package's
sans-IO protocol (masking, fragmentation, UTF-8, control frames per the RFC); the gateway answers pings itself.

The gateway closes a session (and audits why) when:

| close code | reason code | cause |
|---|---|---|
| 1009 Message Too Big | `websocket_message_too_big` | a message over `max_message_bytes`, either way |
| 1008 Policy Violation | `websocket_rate_limited` | client messages over `messages_per_second` + `burst` |
| 1008 Policy Violation | `websocket_credential_expired` | the credential's `exp` passed |
| 1008 Policy Violation | `websocket_credential_revoked` | the credential was revoked (CAEP/SSF, admin) |
| 1001 Going Away | `websocket_idle_timeout` / `websocket_max_duration` | no message for `idle_timeout` / too long |
| 1002 / 1007 | `websocket_protocol_error` / `websocket_invalid_data` | a malformed frame, bad UTF-8 |
| 1014 Bad Gateway | `websocket_upstream_gone` | the upstream's connection ended without a close |
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any
from weakref import WeakKeyDictionary

import httptools
from prometheus_client import CollectorRegistry, Counter, Gauge
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import CLIENT, SERVER, Protocol, State

from bastion import policy_ids as ids
from bastion.context import ControlRecord, Deny, RequestContext
from bastion.http.websocket import Handshake, WebSocketConfig, check_answer, check_handshake
from bastion.server.upstream import UpstreamError

_HIGH_WATER = 1024 * 1024  # bytes queued to one side before the other side's reading pauses
_CLOSE_GRACE = 2.0  # seconds for the closing handshake before the connections are dropped
_UPGRADE_FRAMING = "connection: upgrade\r\nupgrade: websocket\r\n"

_REASONS: dict[int, str] = {CloseCode.MESSAGE_TOO_BIG: "websocket_message_too_big", CloseCode.PROTOCOL_ERROR:
            "websocket_protocol_error", CloseCode.INVALID_DATA: "websocket_invalid_data"}


class WebSocketMetrics:
    """Sessions open and messages relayed, on the gateway's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions = Gauge("bastion_websocket_sessions", "WebSocket sessions open.", registry=registry)
        self.messages = Counter("bastion_websocket_messages_total", "WebSocket messages relayed.",
                                ["direction"], registry=registry)
        self.closed = Counter("bastion_websocket_closed_total", "WebSocket sessions ended, by reason.",
                              ["reason"], registry=registry)


_METRICS: WeakKeyDictionary[CollectorRegistry, WebSocketMetrics] = WeakKeyDictionary()


def refusal(route: Any, ex: Any) -> Deny | None:
    """An upgrade on a route that does not declare `websocket`: refused as before (strict framing), closed."""
    if route.websocket is None:
        return Deny(400, "upgrade_not_supported", ids.gateway("framing.upgrade", route.info.api, route.info.route),
                    close=True)
    return None


async def relay(gateway: Any, ex: Any, ctx: RequestContext, route: Any, plan: Any,
                traceparent: str) -> tuple[int, int | None, Deny | None]:
    """Forward the handshake, then relay the session until it ends. Returns (status, upstream status, deny):
    a deny when the session never opened (the caller answers it), else 101."""
    config: WebSocketConfig = route.websocket
    pid = ids.of_api(route.info, "websocket")
    checked = check_handshake(ex.method, ex.version, ex.headers, pid)
    if isinstance(checked, Deny):
        return checked.status, None, checked
    limits = plan.policy.traffic
    ctx.drop_upstream_headers.add("sec-websocket-extensions")  # no compression: every frame stays readable
    try:
        connected = await _connect(gateway, ctx, route, limits.upstream_connect_timeout)
    except UpstreamError as err:
        return err.status, None, Deny(err.status, err.reason, pid, log_detail=str(err), headers=err.headers,
                                      close=True)
    upstream, transport, side = connected
    head = gateway._request_head(ex, ctx, route, traceparent, _UPGRADE_FRAMING, upstream)
    transport.write(head)
    try:
        status, headers = await asyncio.wait_for(side.head, limits.upstream_timeout)
    except (TimeoutError, ConnectionError) as exc:
        transport.abort()
        return 504, None, Deny(504, "upstream_timeout", pid, log_detail=repr(exc), close=True)
    problem = check_answer(status, headers, checked, ex.header("sec-websocket-protocol"))
    if problem is not None:
        transport.abort()
        return 502, status, Deny(502, problem, pid, log_detail=f"upstream answered {status}", close=True)
    fields = [("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-accept", checked.accept)]
    protocol = next((v for n, v in headers if n == "sec-websocket-protocol"), None)
    if protocol is not None:
        fields.append(("sec-websocket-protocol", protocol))
    fields += [("x-request-id", ctx.request_id), ("traceparent", traceparent), *ctx.response_headers]
    ex.response_started, ex.status, ex.keep_alive = True, 101, False  # the connection is the session's now
    ex.write(b"HTTP/1.1 101 Switching Protocols\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields).encode("latin-1")
             + b"\r\n")
    metrics = _METRICS.get(gateway.metrics.registry)
    if metrics is None:
        metrics = _METRICS[gateway.metrics.registry] = WebSocketMetrics(gateway.metrics.registry)
    session = Session(ex._conn, transport, side, config, ctx, gateway, metrics, checked)
    reason = await session.run(ex.upgrade or b"")
    ctx.records.append(ControlRecord("websocket", "allow" if reason in ("websocket_closed", "") else "deny", pid,
                                     reason))
    return 101, 101, None


async def _connect(gateway: Any, ctx: RequestContext, route: Any,
                   timeout: float) -> tuple[Any, asyncio.Transport, _UpstreamSide]:
    """A fresh connection for the session (never a pooled one). A pool picks a target; a target that cannot be
    reached is reported to the pool (outlier detection) and the next one is tried: nothing was sent yet."""
    pool = gateway.pools.get(route.upstream)
    targets = gateway.target_pools.get(route.upstream) if pool is None else None
    tried: list[Any] = []
    while True:
        if targets is None:
            upstream, conns = route.upstream, pool
        else:
            target = targets.pick(ctx, tried)  # raises a 503 with Retry-After when none is left
            upstream, conns = target.upstream, target.conns
        side = _UpstreamSide()
        try:
            # the same address rules as requests: a name must not lead inside unless the API allows it
            address = await asyncio.wait_for(conns._address(asyncio.get_running_loop()), timeout)
            transport, _ = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                lambda side=side: side, address, upstream.port, ssl=conns._ssl,
                server_hostname=(upstream.tls_server_name or upstream.host) if conns._ssl else None), timeout)
            return upstream, transport, side
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            reason = "upstream_connect_timeout" if isinstance(exc, TimeoutError) else "upstream_connect_failed"
            if targets is None:
                raise UpstreamError(reason, f"websocket upstream: {exc!r}") from None
            targets.connect_failed(target, reason)
            tried.append(target)


class _UpstreamSide(asyncio.Protocol):
    """The connection to the upstream: first its answer's head, then frames for the session."""

    def __init__(self) -> None:
        self.head: asyncio.Future[tuple[int, list[tuple[str, str]]]] = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self.early = b""  # frames that came with the 101
        self.session: Session | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) < 100:
            self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if not self.head.done():
            self.head.set_result((self._parser.get_status_code(), self._headers))

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.from_upstream(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.early += data[exc.args[0]:]
        except httptools.HttpParserError as exc:
            if not self.head.done():
                self.head.set_exception(ConnectionError(f"bad upstream answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionError("upstream closed before answering"))
        if self.session is not None:
            self.session.upstream_lost()

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.client_reading(False)

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.client_reading(True)


class Session:
    """One relayed WebSocket: two sans-IO protocols (client side as server, upstream side as client)."""

    def __init__(self, conn: Any, transport: asyncio.Transport, side: _UpstreamSide, config: WebSocketConfig,
                 ctx: RequestContext, gateway: Any, metrics: WebSocketMetrics, handshake: Handshake) -> None:
        self.loop = asyncio.get_running_loop()
        self.conn = conn
        self.transport = transport
        self.side = side
        self.config = config
        self.ctx = ctx
        self.gateway = gateway
        self.metrics = metrics
        self.client = Protocol(SERVER, state=State.OPEN, max_size=config.max_message_bytes)
        self.upstream = Protocol(CLIENT, state=State.OPEN, max_size=config.max_message_bytes)
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.reason = ""
        self.last = self.loop.time()
        self.tokens = float(config.burst)
        self.refilled = self.last
        self._client_open = True
        self._upstream_open = True

    async def run(self, early: bytes) -> str:
        self.metrics.sessions.inc()
        self.conn.tunnel = self.from_client
        self.side.session = self
        watch = self.loop.create_task(self._watch())
        try:
            if self.side.early:
                self.from_upstream(self.side.early)
            if early:
                self.from_client(early)
            self.conn._resume_reading()  # the client's bytes after the handshake now flow to the session
            await self.done
        finally:
            watch.cancel()
            self.metrics.sessions.dec()
            self.metrics.closed.labels(self.reason or "websocket_closed").inc()
            if not self.transport.is_closing():
                self.transport.abort()
            self.conn.close()
        return self.reason or "websocket_closed"

    # ---- bytes in ---------------------------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        if not data:  # the client's connection ended (after a close, or abruptly): the upstream is told
            self._client_open = False
            self.client.receive_eof()
            if self.upstream.state is State.OPEN:
                self.upstream.send_close(CloseCode.GOING_AWAY)
                self.loop.call_later(_CLOSE_GRACE, self._finish)
        else:
            self.client.receive_data(data)
        for frame in _frames(self.client):
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                if frame.opcode is not Opcode.CONT and not self._take_token():
                    self.close(CloseCode.POLICY_VIOLATION, "message rate exceeded", "websocket_rate_limited")
                    break
                self._send(self.upstream, frame.opcode, bytes(frame.data), frame.fin)
                if frame.fin:
                    self.metrics.messages.labels("client_to_upstream").inc()
            elif frame.opcode is Opcode.CLOSE and self.upstream.state is State.OPEN:
                self._relay_close(self.upstream, bytes(frame.data))
        self._failed(self.client)
        self._flush()

    def from_upstream(self, data: bytes) -> None:
        self.upstream.receive_data(data)
        for frame in _frames(self.upstream):
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self._send(self.client, frame.opcode, bytes(frame.data), frame.fin)
                if frame.fin:
                    self.metrics.messages.labels("upstream_to_client").inc()
            elif frame.opcode is Opcode.CLOSE and self.client.state is State.OPEN:
                self._relay_close(self.client, bytes(frame.data))
        self._failed(self.upstream)
        self._flush()

    def upstream_lost(self) -> None:
        self._upstream_open = False
        if self.client.state is State.OPEN:  # gone without a closing handshake
            self.close(CloseCode.BAD_GATEWAY, "upstream gone", "websocket_upstream_gone")
        self._check_done()

    # ---- bytes out --------------------------------------------------------------------------------------

    def _send(self, to: Protocol, opcode: Opcode, data: bytes, fin: bool) -> None:
        if to.state is not State.OPEN:
            return
        self.last = self.loop.time()
        if opcode is Opcode.TEXT:
            to.send_text(data, fin=fin)
        elif opcode is Opcode.BINARY:
            to.send_binary(data, fin=fin)
        else:
            to.send_continuation(data, fin=fin)

    def _relay_close(self, to: Protocol, payload: bytes) -> None:
        try:
            close = Close.parse(payload)
        except Exception:  # already refused by the protocol that parsed it
            to.send_close(CloseCode.GOING_AWAY)
            return
        if close.code in (CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE, CloseCode.TLS_HANDSHAKE):
            to.send_close()
        else:
            to.send_close(close.code, close.reason)

    def _failed(self, side: Protocol) -> None:
        """A side the protocol failed (too big, malformed, bad UTF-8): close the other side too, and say why."""
        sent = side.close_sent
        if side.parser_exc is not None and sent is not None and not self.reason:
            self.reason = _REASONS.get(sent.code, "websocket_protocol_error")
            other = self.upstream if side is self.client else self.client
            if other.state is State.OPEN:
                other.send_close(CloseCode.GOING_AWAY if other is self.upstream else sent.code, sent.reason)

    def close(self, code: int, text: str, reason: str) -> None:
        """The gateway ends the session: `code` to the client, Going Away to the upstream."""
        if not self.reason:
            self.reason = reason
        if self.client.state is State.OPEN:
            self.client.send_close(code, text)
        if self.upstream.state is State.OPEN:
            self.upstream.send_close(CloseCode.GOING_AWAY, text)
        self._flush()
        self.loop.call_later(_CLOSE_GRACE, self._finish)

    def _flush(self) -> None:
        for data in self.client.data_to_send():
            if data:
                self.conn.write(data)
            else:
                self._client_open = False
                self.conn.close()
        for data in self.upstream.data_to_send():
            if data:
                self.transport.write(data)
            elif not self.transport.is_closing():
                self.transport.close()  # RFC 6455 §7.1.1: after the closing handshake, the TCP connection
        if self.transport.get_write_buffer_size() > _HIGH_WATER:
            self.client_reading(False)
        if not self.conn.writable and not self.transport.is_closing():
            self.transport.pause_reading()  # the client reads slower than the upstream sends
            self.loop.create_task(self._resume_upstream())
        self._check_done()

    async def _resume_upstream(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.drain()
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def client_reading(self, on: bool) -> None:
        if on:
            self.conn._resume_reading()
        else:
            self.conn._pause_reading()

    def _check_done(self) -> None:
        closed = self.client.state is State.CLOSED or not self._client_open
        gone = self.upstream.state is State.CLOSED or not self._upstream_open or self.transport.is_closing()
        if closed and gone:
            self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    # ---- limits over time -------------------------------------------------------------------------------

    def _take_token(self) -> bool:
        now = self.loop.time()
        refill = (now - self.refilled) * self.config.messages_per_second
        self.tokens = min(float(self.config.burst), self.tokens + refill)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def _watch(self) -> None:
        """Idle time, session length, credential expiry and revocation, checked while the session lives."""
        config = self.config
        identity = self.ctx.identity
        exp = identity.claims.get("exp") if identity is not None else None
        wall = self.gateway.services.wall_clock
        started = self.loop.time()
        next_revocation = started + config.revocation_interval
        shared = _identity_shared(self.gateway)
        while not self.done.done():
            await asyncio.sleep(min(1.0, config.idle_timeout / 4, config.revocation_interval))
            now = self.loop.time()
            if isinstance(exp, int | float) and wall() >= exp:
                return self.close(CloseCode.POLICY_VIOLATION, "credential expired", "websocket_credential_expired")
            if now - self.last >= config.idle_timeout:
                return self.close(CloseCode.GOING_AWAY, "idle timeout", "websocket_idle_timeout")
            if config.max_duration is not None and now - started >= config.max_duration:
                return self.close(CloseCode.GOING_AWAY, "session too long", "websocket_max_duration")
            if identity is not None and shared is not None and now >= next_revocation:
                next_revocation = now + config.revocation_interval
                issued = identity.claims.get("iat")
                try:
                    revoked = await shared.revocations.is_revoked(identity.credential_id, identity.subject,
                                                                  identity.consumer, issued)
                except Exception:  # the revocation store is down: fail closed, as the identity stage does
                    revoked = True
                if revoked:
                    return self.close(CloseCode.POLICY_VIOLATION, "credential revoked",
                                      "websocket_credential_revoked")


def _frames(side: Protocol) -> list[Frame]:
    return [event for event in side.events_received() if isinstance(event, Frame)]


def _identity_shared(gateway: Any) -> Any:
    return gateway.compiled.shared.identity

