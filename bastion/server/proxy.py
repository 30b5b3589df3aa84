"""The gateway's request handler: route -> enforce -> forward -> render, then account.

`Gateway.handle` reads top to bottom, one short method per step, each returning a value: `Routed` or a
`Problem` (route), a `Decision` (enforce), `Forwarded` or a `Problem` (forward); `render` turns a `Problem` into
what the client understands. No step raises to say "no". The controls themselves live in the stages, the wire
format in `http1`, `http2` and `upstream`; a request is an `Exchange` whichever protocol carried it.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httptools
import orjson

from bastion import policy_ids as ids
from bastion.compile import CompiledGateway, CompiledRoute, Plan
from bastion.config.secrets import load_cert_chain
from bastion.context import CONTINUE, ControlRecord, Decision, Deny, RequestContext
from bastion.forwarding import GrpcLimits, Upstream
from bastion.grpc.status import grpc_problem, is_grpc
from bastion.http.framing import FramingError
from bastion.http.headers import (
    HeaderNames,
    RequestIds,
    TraceIds,
    TrustedProxies,
    first_header,
    upstream_fields,
    valid_request_id,
)
from bastion.pipeline import run
from bastion.router import AmbiguousPath, split_request_path
from bastion.server import websocket
from bastion.server.body import BodyMalformed, BodyTimeout, BodyTooLarge, ClientGone
from bastion.server.exchange import Exchange
from bastion.server.grpc_proxy import forward_grpc
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
        self.decision_counts = metrics.pending_decisions  # the same dict for the life of `metrics`
        self.audit = services.audit
        self.detector = services.detector
        self.request_ids = RequestIds()
        self.trace_ids = TraceIds()
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
        pool_size, head_bytes = gw.limits.upstream_pool_size, gw.limits.max_upstream_head_bytes
        wanted = {r.upstream for r in compiled.routes if r.grpc is None and r.upstream.pool is None}
        for upstream in wanted - self.pools.keys():
            self.pools[upstream] = UpstreamPool(upstream, pool_size, _client_ssl(upstream), head_bytes=head_bytes)
        for upstream in self.pools.keys() - wanted:
            self.pools.pop(upstream).close()
        wanted = {r.upstream for r in compiled.routes if r.grpc is None and r.upstream.pool is not None}
        for upstream in wanted - self.target_pools.keys():  # several targets: bastion.server.pool
            self.target_pools[upstream] = TargetPool(upstream, pool_size, _client_ssl(upstream), self.audit,
                                                     self.pool_metrics, head_bytes=head_bytes)
        for upstream in self.target_pools.keys() - wanted:
            self.target_pools.pop(upstream).close()
        wanted_h2 = {r.upstream for r in compiled.routes if r.grpc is not None}
        for upstream in wanted_h2 - self.h2_upstreams.keys():
            self.h2_upstreams[upstream] = H2Upstream(upstream.host, upstream.port, tls=_client_ssl(upstream))
        for upstream in self.h2_upstreams.keys() - wanted_h2:
            self.h2_upstreams.pop(upstream).close()
        for old in next(iter(self.metrics.config_info.collect())).samples:
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

    # ---- the request: route -> enforce -> forward -> render ------------------------------------------------

    async def handle(self, ex: Exchange) -> None:
        """One request, top to bottom: route -> enforce -> forward -> render. Each step returns a value; whatever
        happened is accounted for once, at the end."""
        started = time.perf_counter()
        ctx, traceparent = self._context(ex)
        span: Any = None
        span_tokens: Any = None
        if self.tracing is not None:  # OpenTelemetry: the request's span; its context is the traceparent sent on
            span, span_tokens, traceparent = self.tracing.begin(ctx, ctx.host, traceparent)
        routed: Routed | None = None
        outcome: Forwarded | Problem = _GATEWAY_ERROR
        try:
            found = self._route(ex, ctx)
            if found.__class__ is Problem:
                outcome = found
            elif found.preflight is not None:  # type: ignore[union-attr]
                routed = found  # type: ignore[assignment]
                outcome = _answer_preflight(ex, ctx, found, traceparent)  # type: ignore[arg-type]
            else:
                routed = found  # type: ignore[assignment]
                route, plan = found.route, found.plan  # type: ignore[union-attr]
                refused = websocket.refusal(route, ex) if ex.upgrade is not None else None  # RFC 6455 upgrade
                decision = refused or (await self._enforce(ex, ctx, route, plan) if plan.enforces
                                       else _limit_body(ex, ctx, plan))
                if decision.__class__ is Deny:
                    outcome = Problem(decision)
                else:
                    outcome = await self._forward(ex, ctx, route, plan, traceparent)
            if outcome.__class__ is Problem:
                self._render(ex, ctx, outcome.deny, routed, traceparent)
        except ClientGone:
            outcome = _CLIENT_GONE
            raise
        except Exception as exc:  # a gateway bug: fail closed, tell the operator everything, the client nothing
            outcome = Problem(Deny(500, "gateway_error", ids.gateway_at(ctx, "internal"), log_detail=repr(exc)))
            if not ex.response_started:
                ex.problem(500, None, ctx.request_id, close=True)
            else:
                ex.keep_alive = False
        finally:
            self._account(ctx, routed, outcome, time.perf_counter() - started)
            if self.tracing is not None:
                self.tracing.finish(span, span_tokens, ctx, outcome.status,
                                    outcome.deny if isinstance(outcome, Problem) else None)

    def _context(self, ex: Exchange) -> tuple[RequestContext, str]:
        """The request as stages see it (client address, request id, target), and its trace context."""
        peer = ex.peer
        sent_headers = ex.headers  # each read through the Exchange protocol is a generic attribute lookup
        trusted_peer = self.trusted.trusts(peer) if self.trusted.networks else False
        request_id = ""
        if trusted_peer:  # a trusted proxy's request id is kept, anything else is ours
            sent = first_header(sent_headers, "x-request-id")
            if sent and valid_request_id(sent):
                request_id = sent
        headers = self.identity_headers.filter(sent_headers)
        target = ex.target
        if target.startswith("/"):
            path, _, query = target.partition("?")
            host = first_header(headers, "host") or ""
        else:
            path, query, host = _absolute_form(target)
        host = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host.split("]")[0] + "]"
        ctx = RequestContext(
            method=ex.method, raw_target=target, path=path, query=query, headers=headers,
            client_ip=self.trusted.client_ip(peer, headers) if trusted_peer else peer,
            request_id=request_id or self.request_ids.new(), start=self.services.wall_clock(), tls=ex.tls,
            peer_cert=ex.peer_cert, host=host,
        )
        return ctx, self.trace_ids.traceparent(first_header(headers, "traceparent"))

    def _route(self, ex: Exchange, ctx: RequestContext) -> Routed | Problem:
        """The route and plan of the request, or why there is none (default deny)."""
        path = ctx.path
        if not path.startswith("/"):
            return Problem(Deny(400, "bad_request_target", ids.gateway("framing.request_target")))
        try:
            segments = split_request_path(path)
        except (AmbiguousPath, UnicodeDecodeError) as exc:
            return Problem(Deny(400, "ambiguous_path", ids.gateway("framing.path_normalisation"), log_detail=str(exc)))
        table, params = self.compiled.router.match(ctx.host, segments)
        if table is None:
            return Problem(Deny(404, "unknown_route", ids.gateway("routing.default_deny")))
        method = ex.method
        route = table.get(method) or (table.get("GET") if method == "HEAD" else None)
        preflight = None
        if route is None and method == "OPTIONS":
            route, preflight = _preflight(ctx, table)
        if route is None:
            return Problem(Deny(405, "method_not_allowed", ids.gateway("routing.methods"),
                                headers=(("allow", ", ".join(sorted(table))),)))
        info = route.info
        ctx.api, ctx.route, ctx.path_params = info.api, info.route, params
        return Routed(route, route.plan(ctx.start), preflight)

    async def _enforce(self, ex: Exchange, ctx: RequestContext, route: CompiledRoute, plan: Plan) -> Decision:
        """The route's body limit, then its stages: on the head, then (once it is read) on the body."""
        decision = _limit_body(ex, ctx, plan)
        if decision is not CONTINUE:
            return decision
        for control, exception_id in plan.waived:
            ctx.records.append(ControlRecord(control, "waived", ids.of_exception(exception_id, ctx, control), "",
                                             exception_id))
        if plan.stages:
            deny = await run(plan.stages, ctx)
            if deny is not None:
                return deny
        if plan.body_stages and route.grpc is None:  # gRPC: the first message is read by `_forward_grpc`
            body = await _read_body(ex, ctx, plan)
            if body.__class__ is Deny:
                return body
            ctx.body = body  # type: ignore[assignment]
            return await run(plan.body_stages, ctx) or CONTINUE
        return CONTINUE

    def _render(self, ex: Exchange, ctx: RequestContext, deny: Deny, routed: Routed | None,
                traceparent: str) -> None:
        """A refusal as the client understands it: an RFC 9457 problem, a gRPC status, or a cut response."""
        if ex.response_started:  # too late for a problem: the client must not take the response as complete
            ex.keep_alive = False
        elif ex.version == "2" and is_grpc(ex.headers):  # gRPC clients read statuses from trailers
            grpc_problem(ex, deny, ctx.request_id, [("traceparent", traceparent), *ctx.response_headers])
        else:
            close = deny.close or (ex.has_body and not ex.body_complete)
            response = routed.plan.response if routed is not None else None
            extra = response.answer_headers(ctx, ex.tls) if response is not None else []
            ex.problem(deny.status, deny.detail, ctx.request_id,
                       [*deny.headers, ("traceparent", traceparent), *ctx.response_headers, *extra], close=close)

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
                       traceparent: str) -> Forwarded | Problem:
        """The request to the upstream over a pooled HTTP/1.1 connection (gRPC: HTTP/2), its response streamed
        back."""
        if self.tracing is None:
            return await self._forward_once(ex, ctx, route, plan, traceparent)
        span, traceparent = self.tracing.upstream(route.upstream.authority, traceparent)
        outcome: Forwarded | Problem = _GATEWAY_ERROR
        try:
            outcome = await self._forward_once(ex, ctx, route, plan, traceparent)
        finally:
            upstream_status = None if outcome.__class__ is Problem else outcome.upstream_status  # type: ignore[union-attr]
            self.tracing.end_upstream(span, upstream_status, *(("rpc.grpc.status_code",) if route.grpc else ()))
        return outcome

    async def _forward_once(self, ex: Exchange, ctx: RequestContext, route: CompiledRoute, plan: Plan,
                            traceparent: str) -> Forwarded | Problem:
        if route.grpc is not None:
            return await self._forward_grpc(ex, ctx, route, plan, traceparent)
        if ex.upgrade is not None:  # RFC 6455: the session is relayed frame by frame (bastion.server.websocket)
            status, upstream_status, deny = await websocket.relay(self, ex, ctx, route, plan, traceparent)
            return Problem(deny) if deny is not None else Forwarded(status, upstream_status)
        body = ctx.body
        has_body = ex.has_body
        if body is None and has_body:
            if ex.body.received:  # all here already: re-framed by its length, in the same write as the head
                body = await ex.read_body()
            elif ex.body.failed:  # refused before it was forwarded (e.g. past the limit): the upstream never sees it
                refused = await _read_body(ex, ctx, plan)
                return Problem(refused) if refused.__class__ is Deny else _GATEWAY_ERROR
        streaming = body is None and has_body
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
        if targets is None:
            head = self._request_head(ex, ctx, route, traceparent, framing)
            sent = await self._send(ex, ctx, self.pools[route.upstream], head, body, plan, traceparent)
            return self._upstream_problem(route, sent) if sent.__class__ is UpstreamError else sent  # type: ignore
        # a pool of targets: bastion.server.pool picks one per attempt, retries elsewhere, ejects
        outcome: list[Forwarded | Problem] = []

        async def attempt(target: Any, wrap: Any) -> int | None:
            head = self._request_head(ex, ctx, route, traceparent, framing, target.upstream)
            sent = await self._send(ex, ctx, target.conns, head, body, plan, traceparent, wrap)
            if isinstance(sent, UpstreamError):
                raise sent  # the pool's contract: nothing reached the client, it may try another target
            outcome.append(sent)
            return sent.upstream_status if isinstance(sent, Forwarded) else None

        try:
            await targets.forward(ctx, ex.method, not streaming, attempt)
        except UpstreamError as err:
            return self._upstream_problem(route, err)
        return outcome[-1]

    async def _send(self, ex: Exchange, ctx: RequestContext, pool: UpstreamPool, head: bytes, body: bytes | None,
                    plan: Plan, traceparent: str, wrap: Any = None) -> Forwarded | Problem | UpstreamError:
        """One request on one upstream's connections: what came back, or the `UpstreamError` when nothing
        reached the client."""
        limits = plan.policy.traffic
        has_body = ex.has_body
        streaming = body is None and has_body
        for attempt in (0, 1):
            conn = pool.idle() if attempt == 0 else None
            if conn is None:
                try:
                    conn = await pool.acquire(limits.upstream_connect_timeout, fresh=attempt == 1)
                except UpstreamError as err:
                    return err
            sink = ResponseSink(ex, ctx, traceparent, conn, plan.response)
            done = conn.begin(sink if wrap is None else wrap(sink), ex.method == "HEAD")
            try:
                if body is not None:
                    conn.write(head + body if body else head)
                else:
                    conn.write(head)
                    if has_body:
                        cut = await self._stream_body(ex, ctx, conn, plan)
                        if cut is not None:
                            conn.close()
                            pool.release(conn)
                            return cut
                conn.expect_response(limits.upstream_timeout)
                await done
            except UpstreamError as err:
                conn.close()
                pool.release(conn)
                if err.retryable and attempt == 0 and not streaming and not ex.response_started:
                    continue  # a pooled connection the upstream had already closed: try a fresh one
                return err
            except BaseException:
                conn.close()
                pool.release(conn)
                raise
            pool.release(conn)
            return Forwarded(ex.status, sink.status)
        raise AssertionError("unreachable: the second attempt returns")

    def _upstream_problem(self, route: CompiledRoute, err: UpstreamError) -> Problem:
        self.metrics.upstream_errors.labels(err.reason).inc()
        return Problem(Deny(err.status, err.reason, ids.of_api(route.info, "upstream"), log_detail=str(err),
                            headers=err.headers))

    async def _forward_grpc(self, ex: Exchange, ctx: RequestContext, route: CompiledRoute, plan: Plan,
                            traceparent: str) -> Forwarded | Problem:
        """A gRPC call over HTTP/2 to the upstream; every failure is answered with a gRPC status."""
        grpc = route.grpc
        pid = ids.of_api(route.info, "grpc")
        if ex.version != "2":  # gRPC needs HTTP/2 end to end
            ex.problem(426, "gRPC needs HTTP/2.", ctx.request_id, [("upgrade", "h2c")])
            ctx.records.append(ControlRecord("grpc", "deny", pid, "grpc_needs_http2"))
            return Forwarded(426)
        prefetched = b""
        if plan.body_stages and grpc.decode is not None:
            # owner rules on message fields: read and decode the first request message, then check it
            prefetched, deny = await _first_message(ex, ctx, grpc, pid)
            if deny is None:
                deny = await run(plan.body_stages, ctx)
            if deny is not None:
                return Problem(deny)
        result = await forward_grpc(ex, ctx, self.h2_upstreams[route.upstream], grpc,
                                    path=route.upstream.path_prefix + ctx.path, traceparent=traceparent,
                                    prefetched=prefetched)
        if result.reason:  # the gateway ended the call (deadline, message limit, upstream down)
            ctx.records.append(ControlRecord("grpc", "deny", pid, result.reason))
            self.metrics.decision("grpc", "deny", result.reason)
        return Forwarded(result.http_status, result.grpc_status)

    async def _stream_body(self, ex: Exchange, ctx: RequestContext, conn: UpstreamConnection,
                           plan: Plan) -> Problem | None:
        """The request body to the upstream as it arrives (chunked when it came without a length)."""
        chunked = ex.chunked
        while True:
            try:
                data = await ex.read_chunk()
            except BODY_ERRORS as error:
                return Problem(_body_deny(error, ctx, plan))
            if not data:
                if chunked:
                    conn.write(b"0\r\n\r\n")
                return None
            conn.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            await conn.drain()

    # ---- accounting ---------------------------------------------------------------------------------------

    def _account(self, ctx: RequestContext, routed: Routed | None, outcome: Forwarded | Problem,
                 seconds: float) -> None:
        """Release what the request held, then one metric observation and one audit event for it."""
        status = outcome.status
        for finalizer in ctx.finalizers:
            with contextlib.suppress(Exception):  # a finalizer must never mask the response
                finalizer(status)
        if outcome.__class__ is Problem:
            deny, upstream_status = outcome.deny, None
        else:
            deny, upstream_status = None, outcome.upstream_status  # type: ignore[union-attr]
        metrics = self.metrics
        info = routed.route.info if routed is not None else None
        metrics.observe(ctx.method, info.path if info else "_unmatched", status, ctx.api, info.klass if info else "",
                        seconds)
        if deny is not None:
            control = ctx.records[-1].control if ctx.records and ctx.records[-1].outcome == "deny" else "gateway"
            metrics.decision(control, "deny", deny.reason)
        elif ctx.records:  # `metrics.decision` for each record, without a call into pure Python per record
            counts = self.decision_counts
            for record in ctx.records:
                key = (record.control, record.outcome, record.reason)
                counts[key] = counts.get(key, 0) + 1
        if self.audit is not None and self.audit.enabled:
            exceptions = routed.plan.exceptions if routed is not None else ()
            if self.tracing is not None:  # the hand-off to the audit queue, as a span
                with self.tracing.audit():
                    self.audit.request(ctx, status, deny, seconds, exceptions, upstream_status)
            else:
                self.audit.request(ctx, status, deny, seconds, exceptions, upstream_status)
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


# The values of the request path: never changed once built. Not frozen: a frozen dataclass (or a named tuple)
# takes twice as long to build, and every request builds two of them.
@dataclass(slots=True)
class Routed:
    """The route a request goes to and the plan in force for it; `preflight`: a CORS preflight for that route,
    answered by its response controls (status, headers), never forwarded."""

    route: CompiledRoute
    plan: Plan
    preflight: tuple[int, list[tuple[str, str]]] | None = None


@dataclass(slots=True)
class Forwarded:
    """The client got its answer: from the upstream, or from the gateway without a refusal (a preflight)."""

    status: int  # what the client was sent; 499 when it left before
    upstream_status: int | None = None  # the upstream's HTTP status (gRPC: its grpc-status)


@dataclass(slots=True)
class Problem:
    """A refusal, to be rendered to the client as an RFC 9457 problem (or a gRPC status) and audited."""

    deny: Deny

    @property
    def status(self) -> int:
        return self.deny.status


_GATEWAY_ERROR = Problem(Deny(500, "gateway_error", ids.gateway("internal")))
_CLIENT_GONE = Forwarded(499)
BODY_ERRORS = (BodyTooLarge, BodyTimeout, BodyMalformed)


def _absolute_form(target: str) -> tuple[str, str, str]:
    """(path, query, host) of a target in absolute-form: RFC 9112 §3.2.2, its authority replaces Host."""
    try:
        # Any: httptools' stubs say bytes, but an absent part is None (compiled code would check the stub's type)
        url: Any = httptools.parse_url(target.encode("latin-1"))
    except httptools.HttpParserInvalidURLError:
        return target, "", ""
    return ((url.path or b"/").decode("latin-1"), (url.query or b"").decode("latin-1"),
            (url.host or b"").decode("latin-1"))


def _preflight(ctx: RequestContext, table: dict[str, CompiledRoute]) -> tuple[CompiledRoute | None,
                                                                             tuple[int, list[tuple[str, str]]] | None]:
    """A CORS preflight (Fetch §4.8) for a route with CORS: that route and the answer of its response controls.
    (None, None) when it is not one (the OPTIONS request is then routed like any other)."""
    asked = first_header(ctx.headers, "access-control-request-method")
    if first_header(ctx.headers, "origin") is None or asked is None:
        return None, None
    target = table.get(asked) or (table.get("GET") if asked == "HEAD" else None)
    if target is None:
        return None, None
    response = target.plan(ctx.start).response
    answer = response.preflight(ctx) if response is not None else None
    return (target, answer) if answer is not None else (None, None)


def _answer_preflight(ex: Exchange, ctx: RequestContext, routed: Routed, traceparent: str) -> Forwarded | Problem:
    """No credentials needed, never forwarded: 204 with the CORS headers, or a 403 problem."""
    status, headers = routed.preflight or (403, [])
    if status == 204:
        ex.respond(204, [*headers, ("x-request-id", ctx.request_id), ("traceparent", traceparent)], b"")
        return Forwarded(204)
    return Problem(Deny(403, "cors_preflight_refused", routed.plan.response.pid_cors,
                        detail="This cross-origin request is not allowed.", headers=tuple(headers)))


def _limit_body(ex: Exchange, ctx: RequestContext, plan: Plan) -> Decision:
    """The route's body limit: a declared length over it is refused now, a body growing past it once it does."""
    if not ex.has_body:
        return CONTINUE
    limit = plan.policy.traffic.max_body_bytes
    if ex.content_length is not None and ex.content_length > limit:
        return Deny(413, "body_too_large", ids.body_limit(ctx, plan),
                    log_detail=f"Content-Length {ex.content_length} > {limit}", close=True)
    ex.body.set_limit(limit)
    return CONTINUE


async def _read_body(ex: Exchange, ctx: RequestContext, plan: Plan) -> bytes | Deny:
    """The whole request body (bounded by the route's limit), or the refusal of a body that went wrong."""
    try:
        return await ex.read_body()
    except BODY_ERRORS as error:
        return _body_deny(error, ctx, plan)


def _body_deny(error: BodyTooLarge | BodyTimeout | BodyMalformed, ctx: RequestContext, plan: Plan) -> Deny:
    if isinstance(error, BodyTooLarge):
        return Deny(413, "body_too_large", ids.body_limit(ctx, plan), close=True)
    if isinstance(error, BodyTimeout):
        return Deny(408, "body_timeout", ids.gateway_at(ctx, "limits.body_idle_timeout"), close=True)
    return Deny(400, error.error.reason, ids.gateway_at(ctx, "framing"), log_detail=error.error.message, close=True)


async def _first_message(ex: Exchange, ctx: RequestContext, limits: GrpcLimits,
                         pid: str) -> tuple[bytes, Deny | None]:
    """The bytes of the first length-prefixed gRPC message (bounded), decoded into `ctx.body` as JSON."""
    buffered = b""
    try:
        while len(buffered) < 5 or len(buffered) < 5 + int.from_bytes(buffered[1:5], "big"):
            if len(buffered) >= 5 and int.from_bytes(buffered[1:5], "big") > limits.max_message_bytes:
                return buffered, Deny(413, "grpc_message_too_large", pid)
            chunk = await ex.read_chunk()
            if not chunk:
                return buffered, Deny(400, "grpc_missing_message", pid, "The call carries no request message.")
            buffered += chunk
    except BODY_ERRORS as failure:  # not `exc`: compiled code gives a name one type per function (see below)
        return buffered, Deny(400, "grpc_bad_request_stream", pid, log_detail=type(failure).__name__)
    if buffered[0] != 0:  # compressed: its fields cannot be read, so its owner cannot be checked
        return buffered, Deny(400, "grpc_compressed_message", pid,
                              "Compressed request messages are not accepted on this method.")
    length = int.from_bytes(buffered[1:5], "big")
    decode = limits.decode
    try:
        ctx.body = orjson.dumps(decode(buffered[5:5 + length]) if decode is not None else None)
    except Exception as exc:  # protobuf's DecodeError, or a value JSON cannot carry
        return buffered, Deny(400, "grpc_malformed_message", pid, "The request message cannot be decoded.",
                              log_detail=repr(exc))
    return buffered, None


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
        key = upstream.tls_key  # a path, or a secret reference: bastion.config.secrets writes it to a private file
        load_cert_chain(context, upstream.tls_cert, Path(key) if isinstance(key, str) else key, Path("/"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


__all__ = ["Forwarded", "Gateway", "Problem", "Routed"]
