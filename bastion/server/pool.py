"""An API's pool of upstream targets on the wire: pick a target per attempt, retry on another, probe health.

The decisions are the sans-IO classes of `bastion.upstreams`; this module owns the sockets (probes) and the
per-request loop around the proxy's `send` (one attempt on one target's connection pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from bastion.compile import Upstream
from bastion.context import RequestContext
from bastion.http.headers import first_header
from bastion.server.upstream import ResponseSink, UpstreamError, UpstreamPool
from bastion.upstreams.balance import balancer
from bastion.upstreams.events import target_event
from bastion.upstreams.health import CONNECT_FAILURES, Health, TargetEvent
from bastion.upstreams.retry import IDEMPOTENT, RetryBudget, retry_after
from bastion.upstreams.spec import PoolSpec
from bastion.upstreams.target import TargetState

_NOT_SENT = CONNECT_FAILURES | {"upstream_pool_exhausted"}  # the request never left: any method may go elsewhere


class PoolMetrics:
    """Counters of pools, labelled by API and target (bounded by the config)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("bastion_upstream_target_events_total", "Target state changes: ejected, "
                              "unhealthy, healthy, breaker_open, retry_after.", ["api", "target", "event"],
                              registry=registry)
        self.retries = Counter("bastion_upstream_retries_total", "Attempts on another target, by cause.",
                               ["api", "reason"], registry=registry)
        self.breaker_rejections = Counter("bastion_upstream_breaker_rejections_total", "Requests a full "
                                          "target's breaker turned away.", ["api", "target"], registry=registry)
        self.available = Gauge("bastion_upstream_target_available", "1 while a target takes requests.",
                               ["api", "target"], registry=registry)


class Target:
    """One target: its state and its own bounded pool of keep-alive connections."""

    __slots__ = ("conns", "state", "upstream")

    def __init__(self, state: TargetState, upstream: Upstream, conns: UpstreamPool) -> None:
        self.state = state
        self.upstream = upstream
        self.conns = conns


class Held(ResponseSink):
    """Wraps an attempt's response sink: a retryable answer (502/503/504) is read and dropped instead of sent,
    when the pool decided that this attempt may be retried. Every answer's status and `Retry-After` are noted."""

    def __init__(self, inner: Any, retry_on: frozenset[int], may_drop: bool) -> None:
        self.inner = inner
        self._retry_on = retry_on
        self._may_drop = may_drop
        self.status = 0
        self.retry_after: bytes | None = None
        self.dropped = False

    @property
    def paused(self) -> bool:
        return bool(self.inner.paused)

    @paused.setter
    def paused(self, value: bool) -> None:
        self.inner.paused = value

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self.status = status
        for name, value in headers:
            if name.lower() == b"retry-after":
                self.retry_after = value
        if self._may_drop and status in self._retry_on:
            self.dropped = True
            return
        self.inner.on_head(status, headers, keep_alive)

    def on_body(self, data: bytes) -> None:
        if not self.dropped:
            self.inner.on_body(data)

    def on_end(self) -> None:
        if not self.dropped:
            self.inner.on_end()

    def flush(self) -> None:
        if not self.dropped:
            self.inner.flush()


Send = Callable[[Target, Callable[[Any], Any]], Awaitable[int | None]]


class TargetPool:
    """The targets of one API. `forward` runs a request's attempts; probes run while the pool is installed."""

    def __init__(self, upstream: Upstream, pool_size: int, ssl_context: ssl.SSLContext | None, audit: Any,
                 metrics: PoolMetrics, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        spec: PoolSpec = upstream.pool
        self.api = upstream.name
        self.settings = settings = spec.settings
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._ssl = ssl_context
        size = min(pool_size, settings.breaker.max_connections)
        # the breaker: a target holds at most `size` requests on connections and `pending` waiting for one
        self._full = size + min(settings.breaker.max_pending, size)
        self.targets: list[Target] = []
        for t in spec.targets:
            one = replace(upstream, host=t.host, port=t.port, pool=None)
            self.targets.append(Target(TargetState(t.name, t.weight, t.zone), one, UpstreamPool(one, size,
                                                                                                 ssl_context)))
        states = [t.state for t in self.targets]
        self.health = Health(states, settings.outlier, settings.health_check)
        self._balancer = balancer(settings.policy, states)
        self.budget = RetryBudget(settings.retry.budget_percent, settings.retry.min_concurrency)
        self._retry_on = frozenset(settings.retry.on_status)
        self._probes: list[asyncio.Task[None]] = []
        for target in self.targets:
            metrics.available.labels(self.api, target.state.name).set(1)
        if settings.health_check is not None:
            with contextlib.suppress(RuntimeError):  # no running loop (a config compiled offline): no probes
                loop = asyncio.get_running_loop()
                self._probes = [loop.create_task(self._probe_loop(t)) for t in self.targets]

    # ---- choosing -----------------------------------------------------------------------------------------

    def _key(self, ctx: RequestContext) -> str | None:
        hash_on = self.settings.hash_on
        if hash_on == "client":
            return ctx.client_ip
        if hash_on == "consumer":
            identity = ctx.identity
            return (identity.consumer or identity.subject or None) if identity is not None else None
        return first_header(ctx.headers, hash_on[7:])

    def _candidates(self, tried: list[Target], now: float, *, count_breaker: bool) -> list[Target]:
        up = [t for t in self.targets if t not in tried and t.state.available(now)]
        open_ = [t for t in up if t.state.active >= self._full]
        if count_breaker:
            for target in open_:
                self._metrics.breaker_rejections.labels(self.api, target.state.name).inc()
                if not target.state.breaker_open:
                    target.state.breaker_open = True
                    self._publish([TargetEvent(target.state.name, "breaker_open", "max_pending", 0.0)])
        up = [t for t in up if t.state.active < self._full]
        local = self.settings.local_zone
        if local is not None:
            near = [t for t in up if t.state.zone == local]
            return near or up
        return up

    def pick(self, ctx: RequestContext, tried: list[Target]) -> Target:
        """The target of the next attempt, or an `UpstreamError` 503 with `Retry-After` when none can take it."""
        now = self._clock()
        candidates = self._candidates(tried, now, count_breaker=True)
        if not candidates:
            healthy_but_full = [t for t in self.targets if t not in tried and t.state.available(now)]
            if healthy_but_full:
                err = UpstreamError("upstream_overloaded", f"every target of {self.api} is at its breaker limit",
                                    status=503)
                seconds = self.settings.breaker.retry_after
            else:
                err = UpstreamError("upstream_unavailable", f"no target of {self.api} is available", status=503)
                seconds = self.health.back_in(now)
            err.headers = (("retry-after", str(max(1, math.ceil(seconds)))),)
            raise err
        by_state = {id(t.state): t for t in candidates}
        chosen = self._balancer.choose([t.state for t in candidates], self._key(ctx))
        return by_state[id(chosen)]

    # ---- one request --------------------------------------------------------------------------------------

    async def forward(self, ctx: RequestContext, method: str, replayable: bool, send: Send) -> int | None:
        """Run the request's attempts: `send(target, wrap)` makes one on `target` (wrapping its response sink with
        `wrap`) and returns the upstream status, or raises `UpstreamError` with nothing sent to the client."""
        retry = self.settings.retry
        budget = self.budget
        tried: list[Target] = []
        budget.requests += 1
        try:
            while True:
                target = self.pick(ctx, tried)
                attempt = len(tried)
                # a later attempt is possible: tries left, a replayable idempotent request, budget, another target
                more = (attempt + 1 < retry.attempts and budget.allows()
                        and bool(self._candidates([*tried, target], self._clock(), count_breaker=False)))
                may_drop = more and replayable and method in IDEMPOTENT
                held: list[Held] = []

                def wrap(sink: Any, may_drop: bool = may_drop, held: list[Held] = held) -> Held:
                    held.append(Held(sink, self._retry_on, may_drop))
                    return held[-1]

                state = target.state
                state.active += 1
                if attempt:
                    budget.retries += 1
                try:
                    status = await send(target, wrap)
                except UpstreamError as err:
                    self._publish(self.health.failed(state, err.reason, self._clock()))
                    if more and (err.reason in _NOT_SENT or (may_drop and err.status >= 502)):
                        self._metrics.retries.labels(self.api, err.reason).inc()
                        tried.append(target)
                        continue
                    raise
                finally:
                    state.active -= 1
                    if attempt:
                        budget.retries -= 1
                    if state.breaker_open and state.active < self._full:
                        state.breaker_open = False
                answer = held[-1] if held else None
                if answer is not None and answer.status:
                    seconds = retry_after(answer.retry_after, self._wall()) if answer.retry_after else None
                    self._publish(self.health.answered(state, answer.status, seconds, self._clock()))
                    if answer.dropped:
                        self._metrics.retries.labels(self.api, f"status_{answer.status}").inc()
                        tried.append(target)
                        continue
                return status
        finally:
            budget.requests -= 1

    # ---- state changes ------------------------------------------------------------------------------------

    def _publish(self, events: list[TargetEvent]) -> None:
        """One metric and one audit event per state change."""
        now = self._clock()
        for event in events:
            self._metrics.events.labels(self.api, event.target, event.action).inc()
            for target in self.targets:
                if target.state.name == event.target:
                    self._metrics.available.labels(self.api, event.target).set(int(target.state.available(now)))
            audit = self._audit
            if audit is not None and audit.enabled:
                audit.emit(target_event(audit.ids.new(), self.api, event, self._wall()))

    # ---- active health checks -----------------------------------------------------------------------------

    async def _probe_loop(self, target: Target) -> None:
        checks = self.settings.health_check
        if checks is None:
            return
        await asyncio.sleep(random.uniform(0, min(checks.interval, 1.0)))
        while True:
            passed, reason = await self.probe(target)
            self._publish(self.health.probed(target.state, passed, reason))
            if passed:
                self._metrics.available.labels(self.api, target.state.name).set(
                    int(target.state.available(self._clock())))
            await asyncio.sleep(checks.interval)

    async def probe(self, target: Target) -> tuple[bool, str]:
        """`GET path` on its own connection (never a pooled one); passes on a status in the expected range."""
        checks = self.settings.health_check
        if checks is None:
            return True, ""
        up = target.upstream
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(checks.timeout):
                # the same address rules as requests: a name must not lead inside unless the API allows it
                address = await target.conns._address(asyncio.get_running_loop())
                reader, writer = await asyncio.open_connection(
                    address, up.port, ssl=self._ssl,
                    server_hostname=(up.tls_server_name or up.host) if self._ssl else None)
                writer.write(f"GET {up.path_prefix}{checks.path} HTTP/1.1\r\nhost: {up.authority}\r\n"
                             "user-agent: bastion-health-check\r\nconnection: close\r\n\r\n".encode("latin-1"))
                line = await reader.readline()
        except TimeoutError:
            return False, "probe_timeout"
        except UpstreamError as err:
            return False, err.reason
        except (OSError, ssl.SSLError):
            return False, "probe_connect_failed"
        finally:
            if writer is not None:
                writer.close()
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return False, "probe_bad_response"
        low, high = checks.expected_status
        return (True, "") if low <= int(parts[1]) <= high else (False, f"probe_status_{int(parts[1])}")

    def close(self) -> None:
        for task in self._probes:
            task.cancel()
        for target in self.targets:
            target.conns.close()
