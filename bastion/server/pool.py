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

from bastion.context import RequestContext
from bastion.forwarding import Upstream
from bastion.http.budget import UPSTREAM_HEAD_BYTES
from bastion.http.headers import first_header
from bastion.server.upstream import UpstreamError, UpstreamPool
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


class Held:
    """Wraps an attempt's response sink: a retryable answer (502/503/504) is read and dropped instead of sent,
    when `may_retry()` says another attempt will be made. Every answer's status and `Retry-After` are noted.

    A `server.upstream.ResponseSink` by structure, not by base class: in the mypyc build that Protocol is
    compiled, and a pure class cannot inherit from a compiled one."""

    __slots__ = ("_may_retry", "_retry_on", "dropped", "inner", "retry_after", "status")

    def __init__(self, retry_on: frozenset[int], may_retry: Callable[[], bool]) -> None:
        self.inner: Any = None
        self._retry_on = retry_on
        self._may_retry = may_retry
        self.status = 0
        self.retry_after: bytes | None = None
        self.dropped = False

    def wrap(self, inner: Any) -> Held:
        self.inner = inner
        return self

    @property
    def paused(self) -> bool:
        return bool(self.inner.paused)

    @paused.setter
    def paused(self, value: bool) -> None:
        self.inner.paused = value

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self.status = status
        if status in (429, 503):
            for name, value in headers:
                if name.lower() == b"retry-after":
                    self.retry_after = value
        if status in self._retry_on and self._may_retry():  # decided only when it matters: rare
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
                 wall_clock: Callable[[], float] = time.time, head_bytes: int = UPSTREAM_HEAD_BYTES) -> None:
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
            pool = UpstreamPool(one, size, ssl_context, head_bytes=head_bytes)
            self.targets.append(Target(TargetState(t.name, t.weight, t.zone), one, pool))
        states = [t.state for t in self.targets]
        self._states = states
        self._by_state = {id(t.state): t for t in self.targets}
        self._clean_from = 0.0  # from then on every target is available (inf while one is unhealthy)
        self.health = Health(states, settings.outlier, settings.health_check)
        self._balancer = balancer(settings.policy, states)
        self._hashed = settings.policy == "consistent_hash"  # only a hash ring needs the request's key
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
        """Available targets not yet tried with room under their breaker (the local zone's, if any is)."""
        full = self._full
        up = [t for t in self.targets if t.state.healthy and now >= t.state.ejected_until
              and now >= t.state.not_before and t not in tried]
        room = [t for t in up if t.state.active < full]
        if count_breaker and len(room) < len(up):  # a breaker refused someone: count it, audit a new trip
            for target in up:
                if target.state.active >= full:
                    self._metrics.breaker_rejections.labels(self.api, target.state.name).inc()
                    if not target.state.breaker_open:
                        target.state.breaker_open = True
                        self._publish([TargetEvent(target.state.name, "breaker_open", "max_pending", 0.0)])
        local = self.settings.local_zone
        if local is not None:
            near = [t for t in room if t.state.zone == local]
            return near or room
        return room

    def pick(self, ctx: RequestContext, tried: list[Target], now: float | None = None) -> Target:
        """The target of the next attempt, or an `UpstreamError` 503 with `Retry-After` when none can take it."""
        now = self._clock() if now is None else now
        if not tried and now >= self._clean_from and self.settings.local_zone is None:
            # the common case: every target up; only the breakers are to be looked at
            full = self._full
            for target in self.targets:
                if target.state.active >= full:
                    break
            else:
                key = self._key(ctx) if self._hashed else None
                return self._by_state[id(self._balancer.choose(self._states, key))]
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
        if len(candidates) == 1:
            return candidates[0]
        key = self._key(ctx) if self._hashed else None
        return self._by_state[id(self._balancer.choose([t.state for t in candidates], key))]

    # ---- one request --------------------------------------------------------------------------------------

    async def forward(self, ctx: RequestContext, method: str, replayable: bool, send: Send) -> int | None:
        """Run the request's attempts: `send(target, wrap)` makes one on `target` (wrapping its response sink with
        `wrap`) and returns the upstream status, or raises `UpstreamError` with nothing sent to the client."""
        attempts = self.settings.retry.attempts
        budget = self.budget
        tried: list[Target] = []
        budget.requests += 1
        try:
            while True:
                now = self._clock()
                target = self.pick(ctx, tried, now)
                attempt = len(tried)

                def more(target: Target = target, attempt: int = attempt) -> bool:
                    """Another attempt is possible: tries left, budget, another target."""
                    return (attempt + 1 < attempts and budget.allows()
                            and bool(self._candidates([*tried, target], self._clock(), count_breaker=False)))

                held = Held(self._retry_on, (lambda: replayable and method in IDEMPOTENT and more()))
                state = target.state
                state.active += 1
                if attempt:
                    budget.retries += 1
                try:
                    status = await send(target, held.wrap)
                except UpstreamError as err:
                    self._publish(self.health.failed(state, err.reason, self._clock()))
                    if (err.reason in _NOT_SENT or (err.status >= 502 and replayable and method in IDEMPOTENT)) \
                            and more():
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
                answered = held.status
                if answered and (answered >= 500 or held.retry_after is not None or state.consecutive_5xx
                                 or state.consecutive_connect_failures or state.ejections):
                    seconds = retry_after(held.retry_after, self._wall()) if held.retry_after else None
                    self._publish(self.health.answered(state, answered, seconds, self._clock()))
                if held.dropped:
                    self._metrics.retries.labels(self.api, f"status_{answered}").inc()
                    tried.append(target)
                    continue
                return status
        finally:
            budget.requests -= 1

    def connect_failed(self, target: Target, reason: str) -> None:
        """A connection made outside `forward` (a WebSocket session) could not be opened: passive detection."""
        self._publish(self.health.failed(target.state, reason, self._clock()))

    # ---- state changes ------------------------------------------------------------------------------------

    def _publish(self, events: list[TargetEvent]) -> None:
        """One metric and one audit event per state change."""
        if not events:
            return
        now = self._clock()
        states = self._states
        self._clean_from = (max(max(t.ejected_until, t.not_before) for t in states)
                            if all(t.healthy for t in states) else math.inf)
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
