"""The gateway's request handler: route, run the pipeline, forward, answer, audit.

This is the whole life of a request in one readable function (`Gateway.handle`); the controls themselves live
in the stages, the wire format in `http1` and `upstream`.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from typing import Any
from urllib.parse import unquote_plus

import httptools
import orjson

from bastion import policy_ids as ids
from bastion.compile import CompiledGateway, CompiledRoute, Plan
from bastion.context import ControlRecord, Deny, RequestContext
from bastion.forwarding import Upstream
from bastion.grpc.status import grpc_problem, is_grpc
from bastion.http.framing import FramingError
from bastion.http.headers import (
    HeaderNames,
    RequestIds,
    TrustedProxies,
    first_header,
    next_traceparent,
    upstream_fields,
    valid_request_id,
)
from bastion.pipeline import run
from bastion.router import AmbiguousPath, split_request_path
from bastion.server import websocket
from bastion.server.grpc_proxy import forward_grpc
from bastion.server.http1 import BodyMalformed, BodyTimeout, BodyTooLarge, ClientGone, Exchange
from bastion.server.metrics import Metrics
from bastion.server.pool import PoolMetrics, TargetPool
from bastion.server.response import ResponseSink
from bastion.server.upstream import UpstreamConnection, UpstreamError, UpstreamPool
from bastion.server.upstream_h2 import H2Upstream
from bastion.stages.base import Services
from bastion.tracing import Tracing


class Gateway:
    """Holds the compiled config (swapped atomically on reload) and handles requests against it."""

    def __init__(self, compiled: CompiledGateway, services: Services, metrics: Metrics) -> None:
        self.services = services
        self.metrics = metrics
        self.audit = services.audit
        self.detector = services.extra.get("detector")
        self.request_ids = RequestIds()
        self.pools: dict[Upstream, UpstreamPool] = {}
        self.h2_upstreams: dict[Upstream, H2Upstream] = {}  # gRPC upstreams, multiplexed HTTP/2
        self.target_pools: dict[Upstream, TargetPool] = {}  # APIs with several targets
        self.pool_metrics = PoolMetrics(metrics.registry)
        self.tracing = Tracing.start(compiled.config.model.gateway.tracing)  # None unless `gateway.tracing`
        self.in_flight = 0
        self.install(compiled)

    def install(self, compiled: CompiledGateway) -> None:
        """Make `compiled` the config that serves the next request. In-flight requests finish on the old one."""
        gw = compiled.config.model.gateway
        self.compiled = compiled
        if self.tracing is not None:  # a span per stage: the stages are wrapped once per load
            self.tracing.instrument(compiled.routes)
        self.trusted = TrustedProxies(gw.trusted_proxies)
        self.identity_headers = HeaderNames(gw.identity_headers)
        pool_size = gw.limits.upstream_pool_size
        wanted = {r.upstream for r in compiled.routes if r.grpc is None and r.upstream.pool is None}
        for upstream in wanted - self.pools.keys():
            self.pools[upstream] = UpstreamPool(upstream, pool_size, _client_ssl(upstream))
        for upstream in self.pools.keys() - wanted:
            self.pools.pop(upstream).close()
        wanted = {r.upstream for r in compiled.routes if r.grpc is None and r.upstream.pool is not None}
        for upstream in wanted - self.target_pools.keys():  # several targets: bastion.server.pool
            self.target_pools[upstream] = TargetPool(upstream, pool_size, _client_ssl(upstream), self.audit,
                                                     self.pool_metrics)
        for upstream in self.target_pools.keys() - wanted:
            self.target_pools.pop(upstream).close()
        wanted_h2 = {r.upstream for r in compiled.routes if r.grpc is not None}
        for upstream in wanted_h2 - self.h2_upstreams.keys():
            self.h2_upstreams[upstream] = H2Upstream(upstream.host, upstream.port, tls=_client_ssl(upstream))
        for upstream in self.h2_upstreams.keys() - wanted_h2:
            self.h2_upstreams.pop(upstream).close()
        for old in self.metrics.config_info.collect()[0].samples:
            self.metrics.config_info.remove(old.labels["hash"])
        self.metrics.config_info.labels(compiled.config_hash).set(1)

    # ---- protocol errors ----------------------------------------------------------------------------------

    def on_protocol_error(self, peer: str, error: FramingError, target: str) -> str:
        request_id = self.request_ids.new()
        self.metrics.decision("http", "deny", error.reason)
        if self.audit is not None:
            self.audit.protocol_error(peer, error.reason, f"{error.message} (target {target!r})", request_id,
                                      error.status)
        return request_id

    # ---- the request --------------------------------------------------------------------------------------

    async def handle(self, ex: Exchange) -> None:
        started = time.perf_counter()
        compiled = self.compiled  # one config for the whole request, even across a reload
        services = self.services
        peer = ex.peer
        trusted_peer = self.trusted.trusts(peer) if self.trusted.networks else False

        # request id: a trusted proxy's is kept, anything else is ours
        request_id = ""
        if trusted_peer:
            sent = first_header(ex.headers, "x-request-id")
            if sent and valid_request_id(sent):
                request_id = sent
        request_id = request_id or self.request_ids.new()

        headers = self.identity_headers.filter(ex.headers)
        target = ex.target
        if target.startswith("/"):
            path, _, query = target.partition("?")
            host = first_header(headers, "host") or ""
        else:
            try:  # RFC 9112 §3.2.2: absolute-form; its authority replaces Host
                url = httptools.parse_url(target.encode("latin-1"))
                path = (url.path or b"/").decode("latin-1")
                query = (url.query or b"").decode("latin-1")
                host = (url.host or b"").decode("latin-1")
            except httptools.HttpParserInvalidURLError:
                path, query, host = target, "", ""
        host = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host.split("]")[0] + "]"
        ctx = RequestContext(
            method=ex.method, raw_target=target, path=path, query=query, headers=headers,
            client_ip=self.trusted.client_ip(peer, headers) if trusted_peer else peer,
            request_id=request_id, start=services.wall_clock(), tls=ex.tls, peer_cert=ex.peer_cert,
        )
        traceparent = next_traceparent(first_header(headers, "traceparent"))
        span: Any = None
        if self.tracing is not None:  # OpenTelemetry: the request's span; its context is the traceparent sent on
            span, span_tokens, traceparent = self.tracing.begin(ctx, host, traceparent)
        deny: Deny | None = None
        status = 0
        plan: Plan | None = None
        route: CompiledRoute | None = None
        upstream_status: int | None = None
        try:
            if not path.startswith("/"):
                deny = Deny(400, "bad_request_target", ids.gateway("framing.request_target"))
            else:
                try:
                    segments = split_request_path(path)
                except (AmbiguousPath, UnicodeDecodeError) as exc:
                    segments = None
                    deny = Deny(400, "ambiguous_path", ids.gateway("framing.path_normalisation"), log_detail=str(exc))
                if segments is not None:
                    table, params = compiled.router.match(host, segments)
                    if table is None:
                        deny = Deny(404, "unknown_route", ids.gateway("routing.default_deny"))
                    else:
                        route = table.get(ex.method) or (table.get("GET") if ex.method == "HEAD" else None)
                        if ex.method == "OPTIONS" and route is None:
                            preflight = self._preflight(ex, ctx, table, params, request_id, traceparent)
                            if preflight is not None:
                                status, deny, route, plan = preflight
                        if route is None:
                            allow = ", ".join(sorted(table))
                            deny = Deny(405, "method_not_allowed", ids.gateway("routing.methods"),
                                        headers=(("allow", allow),))
                        else:
                            ctx.path_params = params
            if deny is None and route is not None and not ex.response_started:
                info = route.info
                ctx.api, ctx.route = info.api, info.route
                plan = route.plan(ctx.start)
                deny = _limit_body(ex, ctx, plan)
                if deny is None and getattr(ex, "upgrade", None) is not None:  # a WebSocket upgrade request
                    deny = websocket.refusal(route, ex)
                if deny is None and (plan.stages or plan.body_stages or plan.waived):
                    deny = await self._enforce(ex, ctx, plan, buffer_body=route.grpc is None)
                if deny is None and route.grpc is not None:
                    up_span: Any = None
                    if self.tracing is not None:
                        up_span, traceparent = self.tracing.upstream(route.upstream.authority, traceparent)
                    try:
                        status, upstream_status = await self._forward_grpc(ex, ctx, route, plan, traceparent)
                    finally:
                        if up_span is not None:
                            self.tracing.end_upstream(up_span, upstream_status,  # type: ignore[union-attr]
                                                      "rpc.grpc.status_code")
                elif deny is None and getattr(ex, "upgrade", None) is not None:  # RFC 6455: relayed frames
                    status, upstream_status, deny = await websocket.relay(self, ex, ctx, route, plan, traceparent)
                elif deny is None:
                    up_span = None
                    if self.tracing is not None:
                        up_span, traceparent = self.tracing.upstream(route.upstream.authority, traceparent)
                    try:
                        upstream_status = await self._forward(ex, ctx, route, plan, traceparent)
                        status = ex.status
                    except _UpstreamDeny as exc:
                        err = exc.error
                        deny = Deny(err.status, err.reason, ids.of_api(info, "upstream"),
                                    log_detail=str(err), headers=err.headers)
                    except _StageDeny as exc:
                        deny = exc.deny
                    finally:
                        if up_span is not None:
                            self.tracing.end_upstream(up_span, upstream_status)  # type: ignore[union-attr]
            if deny is not None:
                status = deny.status
                if ex.response_started:
                    ex.keep_alive = False
                elif ex.version == "2" and is_grpc(ex.headers):  # gRPC clients read statuses from trailers
                    grpc_problem(ex, deny, request_id, [("traceparent", traceparent), *ctx.response_headers])
                else:
                    close = deny.close or (ex.has_body and not ex.body_complete)
                    extra = plan.response.answer_headers(ctx, ex.tls) if plan and plan.response else []
                    ex.problem(deny.status, deny.detail, request_id,
                               [*deny.headers, ("traceparent", traceparent), *ctx.response_headers, *extra],
                               close=close)
        except ClientGone:
            status = status or 499
            raise
        except Exception as exc:  # a gateway bug: fail closed, tell the operator everything, the client nothing
            deny = Deny(500, "gateway_error", ids.gateway_at(ctx, "internal"), log_detail=repr(exc))
            status = 500
            if not ex.response_started:
                ex.problem(500, None, request_id, close=True)
            else:
                ex.keep_alive = False
        finally:
            for finalizer in ctx.finalizers:
                with contextlib.suppress(Exception):  # a finalizer must never mask the response
                    finalizer(status)
            self._account(ctx, route, plan, status, deny, time.perf_counter() - started, upstream_status)
            if self.tracing is not None:
                self.tracing.finish(span, span_tokens, ctx, status, deny)

    def _preflight(self, ex: Exchange, ctx: RequestContext, table: dict[str, CompiledRoute],
                   params: dict[str, str], request_id: str,
                   traceparent: str) -> tuple[int, Deny | None, CompiledRoute, Plan] | None:
        """A CORS preflight (Fetch §4.8) for a route with CORS is answered here: no credentials needed, never
        forwarded. None when it is not one (the OPTIONS request is then routed like any other)."""
        asked = first_header(ctx.headers, "access-control-request-method")
        if first_header(ctx.headers, "origin") is None or asked is None:
            return None
        target = table.get(asked) or (table.get("GET") if asked == "HEAD" else None)
        if target is None:
            return None
        plan = target.plan(ctx.start)
        answer = plan.response.preflight(ctx) if plan.response is not None else None
        if answer is None:
            return None
        ctx.api, ctx.route, ctx.path_params = target.info.api, target.info.route, params
        status, headers = answer
        if status == 204:
            ex.respond(204, [*headers, ("x-request-id", request_id), ("traceparent", traceparent)], b"")
            return 204, None, target, plan
        deny = Deny(403, "cors_preflight_refused", plan.response.pid_cors,
                    detail="This cross-origin request is not allowed.", headers=tuple(headers))
        return 403, deny, target, plan

    async def _enforce(self, ex: Exchange, ctx: RequestContext, plan: Plan, *, buffer_body: bool = True) -> Deny | None:
        """The route's stages (the body limit is already set)."""
        for control, exception_id in plan.waived:
            ctx.records.append(ControlRecord(control, "waived", ids.of_exception(exception_id, ctx, control), "",
                                             exception_id))
        if plan.stages:
            deny = await run(plan.stages, ctx)
            if deny is not None:
                return deny
        if plan.body_stages and buffer_body:  # gRPC: the first message is checked by `_forward_grpc`
            try:
                ctx.body = await ex.read_body()
            except BodyTooLarge:
                return Deny(413, "body_too_large", ids.body_limit(ctx, plan), close=True)
            except BodyTimeout:
                return Deny(408, "body_timeout", ids.gateway_at(ctx, "limits.body_idle_timeout"), close=True)
            except BodyMalformed as exc:
                return Deny(400, exc.error.reason, ids.gateway_at(ctx, "framing"), log_detail=exc.error.message,
                            close=True)
            return await run(plan.body_stages, ctx)
        return None

    # ---- forwarding ---------------------------------------------------------------------------------------

    def _request_head(self, ex: Exchange, ctx: RequestContext, route: CompiledRoute, traceparent: str,
                      framing: str, upstream: Upstream | None = None) -> bytes:
        up = upstream or route.upstream  # a pool's target names itself in Host
        path = ctx.path
        if route.strip_prefix and path.startswith(route.strip_prefix):
            path = path[len(route.strip_prefix):] or "/"
        query = _without_params(ctx.query, ctx.drop_query_params) if ctx.drop_query_params else ctx.query
        target = up.path_prefix + path + (f"?{query}" if query else "")
        fields = upstream_fields(ctx.headers, ctx.upstream_headers, ctx.drop_upstream_headers, peer=ex.peer,
                                 client_ip=ctx.client_ip, tls=ex.tls, request_id=ctx.request_id,
                                 traceparent=traceparent)
        lines = "".join([f"{name}: {value}\r\n" for name, value in fields])
        return f"{ex.method} {target} HTTP/1.1\r\nhost: {up.authority}\r\n{lines}{framing}\r\n".encode("latin-1")

    async def _forward(self, ex: Exchange, ctx: RequestContext, route: CompiledRoute, plan: Plan,
                       traceparent: str) -> int | None:
        body = ctx.body
        if body is None and ex.has_body and ex.body_received:
            body = await ex.read_body()  # all here already: re-framed by its length, in the same write as the head
        streaming = body is None and ex.has_body
        if body is not None:
            framing = f"content-length: {len(body)}\r\n" if body or ex.method in ("POST", "PUT", "PATCH") else ""
        elif ex.chunked:
            framing = "transfer-encoding: chunked\r\n"
        elif ex.content_length:
            framing = f"content-length: {ex.content_length}\r\n"
        else:
            framing = ""
        if plan.response is not None and plan.response.filters_bodies:
            ctx.drop_upstream_headers.add("accept-encoding")  # a compressed body could not be filtered
        targets = self.target_pools.get(route.upstream)
        try:
            if targets is None:
                head = self._request_head(ex, ctx, route, traceparent, framing)
                return await self._send(ex, ctx, self.pools[route.upstream], head, body, streaming, plan, traceparent)
            # a pool of targets: bastion.server.pool picks one per attempt, retries elsewhere, ejects
            return await targets.forward(ctx, ex.method, not streaming, lambda target, wrap: self._send(
                ex, ctx, target.conns, self._request_head(ex, ctx, route, traceparent, framing, target.upstream),
                body, streaming, plan, traceparent, wrap))
        except UpstreamError as err:
            raise _UpstreamDeny(err) from None

    async def _send(self, ex: Exchange, ctx: RequestContext, pool: UpstreamPool, head: bytes, body: bytes | None,
                    streaming: bool, plan: Plan, traceparent: str, wrap: Any = None) -> int | None:
        """One request on one upstream's connections; an `UpstreamError` means nothing reached the client."""
        limits = plan.policy.traffic
        for attempt in (0, 1):
            try:
                conn = (attempt == 0 and pool.idle()) or await pool.acquire(limits.upstream_connect_timeout,
                                                                            fresh=attempt == 1)
            except UpstreamError as err:
                self.metrics.upstream_errors.labels(err.reason).inc()
                raise
            sink = ResponseSink(ex, ctx, traceparent, conn, plan.response)
            done = conn.begin(sink if wrap is None else wrap(sink), ex.method == "HEAD")
            try:
                if body is not None:
                    conn.write(head + body if body else head)
                else:
                    conn.write(head)
                    if ex.has_body:
                        await self._stream_body(ex, conn, ctx, plan)
                conn.expect_response(limits.upstream_timeout)
                await done
                pool.release(conn)
                return sink.status
            except UpstreamError as err:
                conn.close()
                pool.release(conn)
                if err.retryable and attempt == 0 and not streaming and not ex.response_started:
                    continue  # a pooled connection the upstream had already closed: try a fresh one
                self.metrics.upstream_errors.labels(err.reason).inc()
                if ex.response_started:
                    ex.keep_alive = False
                    raise ClientGone() from None
                raise
            except BaseException:
                conn.close()
                pool.release(conn)
                raise
        return None

    async def _forward_grpc(self, ex: Exchange, ctx: RequestContext, route: CompiledRoute, plan: Plan,
                            traceparent: str) -> tuple[int, int | None]:
        """A gRPC call over HTTP/2 to the upstream; every failure is answered with a gRPC status."""
        if ex.version != "2":  # gRPC needs HTTP/2 end to end
            ex.problem(426, "gRPC needs HTTP/2.", ctx.request_id, [("upgrade", "h2c")])
            ctx.records.append(ControlRecord("grpc", "deny", ids.of_api(route.info, "grpc"), "grpc_needs_http2"))
            return 426, None
        prefetched = b""
        if plan.body_stages and route.grpc.decode is not None:
            # owner rules on message fields: read and decode the first request message, then check it
            prefetched, deny = await self._first_message(ex, ctx, route)
            if deny is None:
                deny = await run(plan.body_stages, ctx)
            if deny is not None:
                grpc_problem(ex, deny, ctx.request_id, [("traceparent", traceparent)])
                self.metrics.decision(ctx.records[-1].control if ctx.records else "grpc", "deny", deny.reason)
                return 200, None
        result = await forward_grpc(ex, ctx, self.h2_upstreams[route.upstream], route.grpc,
                                    path=route.upstream.path_prefix + ctx.path, traceparent=traceparent,
                                    prefetched=prefetched)
        if result.reason:  # the gateway ended the call (deadline, message limit, upstream down)
            ctx.records.append(ControlRecord("grpc", "deny", ids.of_api(route.info, "grpc"), result.reason))
            self.metrics.decision("grpc", "deny", result.reason)
        return result.http_status, result.grpc_status

    async def _first_message(self, ex: Exchange, ctx: RequestContext,
                             route: CompiledRoute) -> tuple[bytes, Deny | None]:
        """The bytes of the first length-prefixed gRPC message (bounded), decoded into `ctx.body` as JSON."""
        limits = route.grpc
        pid = ids.of_api(route.info, "grpc")
        buffered = b""
        try:
            while len(buffered) < 5 or len(buffered) < 5 + int.from_bytes(buffered[1:5], "big"):
                if len(buffered) >= 5 and int.from_bytes(buffered[1:5], "big") > limits.max_message_bytes:
                    return buffered, Deny(413, "grpc_message_too_large", pid)
                chunk = await ex.read_chunk()
                if not chunk:
                    return buffered, Deny(400, "grpc_missing_message", pid, "The call carries no request message.")
                buffered += chunk
        except (BodyTooLarge, BodyTimeout, BodyMalformed) as exc:
            return buffered, Deny(400, "grpc_bad_request_stream", pid, log_detail=type(exc).__name__)
        if buffered[0] != 0:  # compressed: its fields cannot be read, so its owner cannot be checked
            return buffered, Deny(400, "grpc_compressed_message", pid,
                                  "Compressed request messages are not accepted on this method.")
        length = int.from_bytes(buffered[1:5], "big")
        try:
            ctx.body = orjson.dumps(limits.decode(buffered[5:5 + length]))
        except Exception as exc:  # protobuf's DecodeError, or a value JSON cannot carry
            return buffered, Deny(400, "grpc_malformed_message", pid, "The request message cannot be decoded.",
                                  log_detail=repr(exc))
        return buffered, None

    async def _stream_body(self, ex: Exchange, conn: UpstreamConnection, ctx: RequestContext, plan: Plan) -> None:
        chunked = ex.chunked
        while True:
            try:
                data = await ex.read_chunk()
            except BodyTooLarge:
                raise _StageDeny(Deny(413, "body_too_large", ids.body_limit(ctx, plan), close=True)) from None
            except BodyTimeout:
                raise _StageDeny(Deny(408, "body_timeout", ids.gateway_at(ctx, "limits.body_idle_timeout"),
                                      close=True)) from None
            except BodyMalformed as exc:
                raise _StageDeny(Deny(400, exc.error.reason, ids.gateway_at(ctx, "framing"), close=True)) from None
            if not data:
                if chunked:
                    conn.write(b"0\r\n\r\n")
                return
            conn.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            await conn.drain()

    # ---- accounting ---------------------------------------------------------------------------------------

    def _account(self, ctx: RequestContext, route: CompiledRoute | None, plan: Plan | None, status: int,
                 deny: Deny | None, seconds: float, upstream_status: int | None) -> None:
        metrics = self.metrics
        info = route.info if route is not None else None
        metrics.observe(ctx.method, info.path if info else "_unmatched", status, ctx.api, info.klass if info else "",
                        seconds)
        if deny is not None:
            control = ctx.records[-1].control if ctx.records and ctx.records[-1].outcome == "deny" else "gateway"
            metrics.decision(control, "deny", deny.reason)
        elif ctx.records:
            for record in ctx.records:
                metrics.decision(record.control, record.outcome, record.reason)
        if self.audit is not None and self.audit.enabled:
            if self.tracing is not None:  # the hand-off to the audit queue, as a span
                with self.tracing.audit():
                    self.audit.request(ctx, status, deny, seconds, plan.exceptions if plan else (), upstream_status)
            else:
                self.audit.request(ctx, status, deny, seconds, plan.exceptions if plan else (), upstream_status)
        if self.detector is not None:  # runs with or without sinks: detections answer attacks, not logs
            self.detector.observe(ctx, status, deny)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        for h2 in self.h2_upstreams.values():
            h2.close()
        for targets in self.target_pools.values():
            targets.close()
        if self.tracing is not None:
            self.tracing.close()


def _limit_body(ex: Exchange, ctx: RequestContext, plan: Plan) -> Deny | None:
    """The route's body limit: a declared length over it is refused now, a body growing past it once it does."""
    limit = plan.policy.traffic.max_body_bytes
    if ex.content_length is not None and ex.content_length > limit:
        return Deny(413, "body_too_large", ids.body_limit(ctx, plan),
                    log_detail=f"Content-Length {ex.content_length} > {limit}", close=True)
    ex.limit_body(limit)
    return None


class _UpstreamDeny(Exception):
    def __init__(self, error: UpstreamError) -> None:
        super().__init__(str(error))
        self.error = error


class _StageDeny(Exception):
    def __init__(self, deny: Deny) -> None:
        super().__init__(deny.reason)
        self.deny = deny


def _without_params(query: str, names: set[str]) -> str:
    """The query string without the named parameters (compared after percent-decoding)."""
    kept = [part for part in query.split("&") if unquote_plus(part.split("=", 1)[0]) not in names]
    return "&".join(kept)


def _client_ssl(upstream: Upstream) -> Any:
    """Verified TLS to an https upstream: system CAs or the API's CA bundle, optional client certificate."""
    if upstream.scheme != "https":
        return None
    context = ssl.create_default_context(cafile=upstream.tls_ca)
    if upstream.tls_cert is not None:
        context.load_cert_chain(upstream.tls_cert, upstream.tls_key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


__all__ = ["Gateway"]
