"""Forward one gRPC call over HTTP/2: both directions streamed, trailers preserved, deadline and message limits
enforced by the gateway itself (the upstream also receives the remaining deadline in `grpc-timeout`)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from bastion.context import RequestContext
from bastion.forwarding import GrpcLimits
from bastion.grpc.framing import MessageCounter, MessageLimitError
from bastion.grpc.status import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    INTERNAL,
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    format_timeout,
    parse_timeout,
    trailers,
)
from bastion.http.headers import HOP_BY_HOP, SOFTWARE, upstream_fields
from bastion.server.http1 import BodyTimeout, BodyTooLarge, ClientGone
from bastion.server.upstream import UpstreamError
from bastion.server.upstream_h2 import H2Upstream, UpstreamStream

# never copied to the upstream: re-made by the gateway, or meaningless across the hop
_REQUEST_DROP = frozenset({"te", "grpc-timeout", "content-length"})  # set here from the limits
_RESPONSE_DROP = SOFTWARE | {"x-request-id", "content-length"}  # the gateway sets or frames these itself


@dataclass(frozen=True, slots=True)
class GrpcResult:
    """How the call ended, for metrics and the audit event. `reason` is set when the gateway ended it."""

    http_status: int
    grpc_status: int | None
    reason: str | None = None
    messages: int = 0


def upstream_headers(ex: Any, ctx: RequestContext, upstream: H2Upstream, path: str, timeout: float | None,
                     traceparent: str | None) -> list[tuple[str, str]]:
    fields = [(":method", "POST"), (":scheme", upstream.scheme), (":path", path), (":authority", upstream.authority),
              ("te", "trailers")]  # RFC 9113 §8.2.2: the one TE value HTTP/2 allows; gRPC requires it
    if timeout is not None:
        fields.append(("grpc-timeout", format_timeout(timeout)))
    fields += upstream_fields(ctx.headers, ctx.upstream_headers, ctx.drop_upstream_headers | _REQUEST_DROP,
                              peer=ex.peer, client_ip=ctx.client_ip, tls=ex.tls, request_id=ctx.request_id,
                              traceparent=traceparent or "")
    return fields


async def forward_grpc(ex: Any, ctx: RequestContext, upstream: H2Upstream, limits: GrpcLimits, *,
                       path: str | None = None, traceparent: str | None = None,
                       prefetched: bytes = b"") -> GrpcResult:
    """Proxy the call on `ex` (an H2Exchange) to `upstream`; every failure is answered with a gRPC status."""
    try:
        timeout = parse_timeout(ctx.header("grpc-timeout"))
    except ValueError:
        return _answer(ex, ctx, INVALID_ARGUMENT, "malformed grpc-timeout", "grpc_bad_timeout")
    timeout = timeout if timeout is not None else limits.default_timeout
    if timeout is not None and limits.max_timeout is not None:
        timeout = min(timeout, limits.max_timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout is not None else None
    counter = MessageCounter(limits.max_message_bytes, limits.max_messages)
    # the whole request already here (a unary call, usually): its messages are checked before the upstream is
    # contacted, and it goes with the headers in one write, without a pump task
    whole = ex.body.whole() if ex.has_body else None
    if whole is not None:
        whole = prefetched + whole if prefetched else whole
        try:
            counter.feed(whole)
            if not counter.complete:
                raise MessageLimitError("grpc_truncated_message", "the request ended inside a message")
        except MessageLimitError as exc:
            return _answer(ex, ctx, _limit_code(exc), str(exc), exc.reason, counter.messages)
    try:
        headers = upstream_headers(ex, ctx, upstream, path or ctx.path, timeout, traceparent)
        stream = await upstream.open_stream(headers, connect_timeout=limits.connect_timeout,
                                            end_stream=not ex.has_body, body=whole)
    except UpstreamError as err:
        return _answer(ex, ctx, UNAVAILABLE, "upstream unavailable", err.reason)
    failure: list[tuple[int, str, str]] = []
    pump: asyncio.Task[None] | None = None
    if whole is None and ex.has_body:
        pump = loop.create_task(_pump(ex, stream, counter, failure, prefetched))
    elif stream.unsent:  # the rest of a whole body, as the upstream's window opens
        pump = loop.create_task(_send_rest(stream, stream.unsent))
    try:
        async with asyncio.timeout_at(deadline):
            result = await _relay(ex, ctx, stream, limits)
        if pump is not None and not pump.done():
            pump.cancel()  # the upstream answered before reading everything: the rest is not needed
        return result
    except TimeoutError:
        stream.reset()
        return _answer(ex, ctx, DEADLINE_EXCEEDED, "deadline exceeded", "grpc_deadline_exceeded", counter.messages)
    except UpstreamError as err:
        stream.reset()
        if failure:
            code, message, reason = failure[0]
            return _answer(ex, ctx, code, message, reason, counter.messages)
        return _answer(ex, ctx, UNAVAILABLE, "upstream unavailable", err.reason, counter.messages)
    except MessageLimitError as exc:  # a response message over the limit
        stream.reset()
        return _answer(ex, ctx, RESOURCE_EXHAUSTED, "response message too large", exc.reason, counter.messages)
    except BaseException:
        stream.reset()
        raise
    finally:
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump


async def _pump(ex: Any, stream: UpstreamStream, counter: MessageCounter,
                failure: list[tuple[int, str, str]], prefetched: bytes = b"") -> None:
    """Client -> upstream, counting messages; a broken limit resets the upstream stream (the relay answers).
    `prefetched`: request bytes the gateway already read (to check the first message) go first."""
    try:
        if prefetched:
            counter.feed(prefetched)
            await stream.send(prefetched)
        while chunk := await ex.read_chunk():
            counter.feed(chunk)
            await stream.send(chunk)
        if not counter.complete:
            raise MessageLimitError("grpc_truncated_message", "the request ended inside a message")
        await stream.send(b"", end=True)
    except MessageLimitError as exc:
        failure.append((_limit_code(exc), str(exc), exc.reason))
        stream.reset()
    except BodyTooLarge:
        failure.append((RESOURCE_EXHAUSTED, "request too large", "body_too_large"))
        stream.reset()
    except BodyTimeout:
        failure.append((CANCELLED, "request stalled", "body_timeout"))
        stream.reset()
    except ClientGone:
        stream.reset()
    except UpstreamError:
        pass  # the relay sees the same failure on its side


async def _send_rest(stream: UpstreamStream, data: bytes) -> None:
    """The part of a whole (already counted) request body that did not fit the upstream's window at once."""
    with contextlib.suppress(UpstreamError):  # the relay sees the same failure on its side
        await stream.send(data, end=True)


def _limit_code(exc: MessageLimitError) -> int:
    return INTERNAL if exc.reason == "grpc_truncated_message" else RESOURCE_EXHAUSTED


async def _relay(ex: Any, ctx: RequestContext, stream: UpstreamStream, limits: GrpcLimits) -> GrpcResult:
    """Upstream -> client: headers, messages (with back-pressure), trailers."""
    status, raw, ended = await stream.response
    headers = [(n, v) for n, v in raw if not n.startswith(":") and n not in HOP_BY_HOP and n not in _RESPONSE_DROP]
    headers.append(("x-request-id", ctx.request_id))
    grpc = _grpc_code(raw)
    if ended:  # trailers-only (e.g. an upstream error status): one HEADERS frame, as received
        ex.respond(status, headers, b"")
        return GrpcResult(status, grpc)
    # the headers wait for the first bytes when those are here already (one write), never for bytes to come
    ex.start_response(status, headers, length=None, defer=stream.buffered)
    counter = MessageCounter(limits.max_response_message_bytes) if limits.max_response_message_bytes else None
    while data := await stream.read():
        if counter is not None:
            counter.feed(data)
        if stream.complete and stream.trailers:  # the last bytes: they go out with the trailers, in one write
            ex.write(data, send=False)
            break
        ex.write(data)
        await ex.drain()
    if stream.trailers:
        ex.send_trailers([(n, v) for n, v in stream.trailers if n not in HOP_BY_HOP])
        grpc = _grpc_code(stream.trailers)
    return GrpcResult(status, grpc)


def _answer(ex: Any, ctx: RequestContext, code: int, message: str, reason: str, messages: int = 0) -> GrpcResult:
    """End the call with a gRPC status: trailers-only when nothing was sent yet, trailers otherwise."""
    if not ex.response_started:
        ex.respond(200, [("content-type", "application/grpc"), *trailers(code, message),
                         ("x-request-id", ctx.request_id)], b"")
    else:
        ex.send_trailers(trailers(code, message))
    return GrpcResult(200, code, reason, messages)


def _grpc_code(fields: list[tuple[str, str]]) -> int | None:
    for name, value in fields:
        if name == "grpc-status" and value.isdigit():
            return int(value)
    return None
