"""Detections computed from the gateway's own decisions, in sliding windows, with their responses.

`Detector.observe(ctx, status, deny)` is called once per request (after the response); it is synchronous and
costs a few dict operations. A detection that fires emits a Detection Finding (2004), places the configured
temporary blocks (`BlockList.place`) and calls the alert webhook, without waiting for either.

| detection            | counts                                                   | per                        |
|----------------------|----------------------------------------------------------|----------------------------|
| credential_stuffing  | authentication failures (not missing credentials)        | IP, subject, consumer      |
| enumeration          | distinct object ids answered 403/404                     | caller (subject/consumer/IP)|
| usage_anomaly        | requests, against the caller's own baseline rate         | caller                     |
| input_violations     | input-validation denials                                 | IP                         |
| forged_tokens        | bad signatures, refused algorithms, key-injection headers | IP                         |

Windows are per instance (memory bounded by `max_keys` per detector) until `share(state)` is called with a
shared backend (Redis, or the supervisor of `serve --workers N`): the burst detections' counts then live in that
backend as sliding windows (`det:<detection>:<kind>:<key>`), enumeration and usage anomaly as described in
`bastion.audit.shared_windows`, so N workers or nodes fire at the configured threshold, not N times it, and one
finding fires per key and cooldown across all of them. An unreachable backend falls back to this instance's
windows. Blocks are shared through the state backend when one is configured.
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from bastion.audit.blocks import BlockList
from bastion.audit.config import AuditConfig, DetectionRule, DetectionsConfig, WebhookConfig
from bastion.audit.events import finding_event, is_auth_failure
from bastion.audit.shared_windows import RateSync, distinct_hits, fired_gate
from bastion.cache import BoundedCache
from bastion.context import Deny, RequestContext
from bastion.http.fetch import FetchError, fetch
from bastion.state import Hit, StateUnavailable

MAX_PENDING = 1024  # shared counts in flight; beyond this (a flood) events are counted locally

FORGED_REASONS = frozenset({"jwt_bad_signature", "jwt_alg_not_allowed", "jwt_header_not_allowed"})
NOT_ATTEMPTS = frozenset({"jwt_missing", "credential_missing", "introspection_unavailable", "jwks_unavailable"})
INPUT_PREFIXES = ("input_", "schema_", "body_", "param_", "inspection_")

_STUFFING_ATTACK = (("TA0006", "Credential Access", "T1110.004", "Credential Stuffing"),)
_BRUTE_ATTACK = (("TA0006", "Credential Access", "T1110", "Brute Force"),)
_FORGED_ATTACK = (("TA0006", "Credential Access", "T1606", "Forge Web Credentials"),)
_ENUM_ATTACK = (("TA0009", "Collection", "T1530", "Data from Cloud Storage"),)
_FLOW_ATTACK = (("TA0040", "Impact", "T1496", "Resource Hijacking"),)
_FLOW_REASONS = frozenset({"flow_order", "flow_tempo", "flow_limit"})  # bastion.stages.flows.FLOW_REASONS


class Burst:
    """`threshold` events within `window` seconds: the timestamps of the last `threshold` events per key."""

    def __init__(self, threshold: int, window: float, limit: int) -> None:
        self.threshold = threshold
        self.window = window
        # a key quiet for a whole window has nothing left in it; a key in steady use survives a flood of new ones
        self.keys: BoundedCache[Any, deque[float]] = BoundedCache(limit, window)

    def hit(self, key: Any, now: float) -> float | None:
        """The first event's time when this event completes a burst (the key then starts afresh), else None."""
        times = self.keys.get(key, now)
        if times is None:
            times = deque(maxlen=self.threshold)
        self.keys.put(key, times, now)  # each event keeps the key for another window
        times.append(now)
        if len(times) == self.threshold and now - times[0] <= self.window:
            first: float = times[0]
            times.clear()
            return first
        return None


class Distinct:
    """Distinct values per key within `window` seconds (object ids per caller)."""

    def __init__(self, threshold: int, window: float, limit: int) -> None:
        self.threshold = threshold
        self.window = window
        self.keys: BoundedCache[Any, dict[str, float]] = BoundedCache(limit, window)

    def hit(self, key: Any, value: str, now: float) -> tuple[int, float] | None:
        seen = self.keys.get(key, now)
        if seen is None:
            seen = {}
        self.keys.put(key, seen, now)
        seen.pop(value, None)
        seen[value] = now
        horizon = now - self.window
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] >= horizon:
                break
            del seen[oldest]
        if len(seen) >= self.threshold:
            count, first = len(seen), seen[next(iter(seen))]
            seen.clear()
            return count, first
        return None


class Baseline:
    """Requests per caller in a sliding window, against the caller's own exponentially weighted rate.

    State per caller: [first seen, window index, current count, previous count, baseline requests/s].
    """

    def __init__(self, threshold: int, window: float, factor: float, tau: float, warmup: float,
                 limit: int) -> None:
        self.threshold = threshold
        self.window = window
        self.factor = factor
        self.tau = tau
        self.warmup = warmup
        # a caller silent for its warm-up (up to one window less: the expiry is renewed once per window) starts
        # afresh (a fresh credential would give it a warm-up all the same), so a stream of one-time subjects holds
        # at most `warmup` seconds of them
        self.keys: BoundedCache[Any, list[float]] = BoundedCache(limit, max(warmup, 2 * window))

    def hit(self, key: Any, now: float) -> tuple[float, float] | None:
        """(rate, baseline) when this caller's rate is far above its own baseline, else None."""
        window = self.window
        index = math.floor(now / window)
        state = self.keys.get(key, now)
        if state is None:
            self.keys.put(key, [now, index, 1.0, 0.0, 0.0], now)
            return None
        if index != state[1]:
            # a caller's first request in a new window keeps its state for another `warmup` (or two windows):
            # once per window, not per request (the read above already marked it recently used)
            self.keys.put(key, state, now)
            gap = index - state[1]
            alpha = 1 - math.exp(-window / self.tau)
            rate = state[4] + alpha * (state[2] / window - state[4])  # fold the finished window in ...
            state[4] = rate * (1 - alpha) ** (gap - 1)  # ... and the empty ones after it
            state[3] = state[2] if gap == 1 else 0.0
            state[1], state[2] = index, 0.0
        state[2] += 1
        return self._check(state, now, index)

    def sync(self, key: Any, index: int, count: float) -> None:
        """Every process's count of `key` in window `index` (`RateSync`): the window holds at least that."""
        state = self.keys.get(key, index * self.window)
        if state is not None and state[1] == index and count > state[2]:
            state[2] = count

    def _check(self, state: list[float], now: float, index: int) -> tuple[float, float] | None:
        window = self.window
        if now - state[0] < self.warmup:
            return None
        estimate = state[3] * (1 - (now - index * window) / window) + state[2]
        if estimate < self.threshold:
            return None
        rate, baseline = estimate / window, state[4]
        if rate > self.factor * baseline:
            state[2] = state[3] = 0.0  # start counting afresh (and do not fire again at once)
            return rate, baseline
        return None


class Webhook:
    """POSTs each finding as JSON, in the background; at most `max_in_flight` at once (others are counted)."""

    def __init__(self, config: WebhookConfig, token: str | None = None, ssl_context: Any = None,
                 max_in_flight: int = 32) -> None:
        self.config = config
        self.headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
        if token:
            self.headers += (("Authorization", f"Bearer {token}"),)
        self.ssl_context = ssl_context
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.sent = 0
        self.failed = 0
        self._tasks: set[Any] = set()

    def send(self, event: dict[str, Any]) -> None:
        import asyncio

        if self.in_flight >= self.max_in_flight:
            self.failed += 1
            return
        try:
            task = asyncio.get_running_loop().create_task(self._post(event))
        except RuntimeError:
            return
        self.in_flight += 1
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, event: dict[str, Any]) -> None:
        try:
            response = await fetch(self.config.url, method="POST", headers=self.headers, body=orjson.dumps(event),
                                   timeout=self.config.timeout, max_bytes=64 * 1024, ssl_context=self.ssl_context)
            if 200 <= response.status < 300:
                self.sent += 1
            else:
                self.failed += 1
        except FetchError as exc:
            self.failed += 1
            print(f"bastion: alert webhook failed: {exc}", file=sys.stderr)
        finally:
            self.in_flight -= 1


class Detector:
    """The detections of one gateway process. `observe` is the only per-request call."""

    @classmethod
    def from_config(cls, config: AuditConfig, audit: Any, blocks: BlockList | None, base_dir: Any = None) -> Detector:
        """Detections and responses of `gateway.audit` (`base_dir` resolves a webhook's CA file)."""
        import os
        from pathlib import Path

        from bastion.audit.sinks import client_ssl

        webhook = None
        hook = config.responses.webhook
        if hook is not None:
            token = os.environ.get(hook.token_env) if hook.token_env else None
            if hook.token is not None:  # loaded with the config
                token = hook.token.value()
            if hook.token_env and not token:
                raise ValueError(f"alert webhook: environment variable {hook.token_env} is not set")
            context = client_ssl(hook.tls, Path(base_dir or ".")) if hook.url.startswith("https:") else None
            webhook = Webhook(hook, token, context)
        if blocks is not None:
            blocks.max_blocks = config.responses.max_active_blocks
        return cls(config.detections, audit, blocks, webhook)

    def __init__(self, config: DetectionsConfig, audit: Any, blocks: BlockList | None = None,
                 webhook: Webhook | None = None, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.audit = audit
        self.blocks = blocks
        self.webhook = webhook
        self.metrics = getattr(audit, "metrics", None)
        self.enabled = config.enabled
        self.findings = 0
        self._never = frozenset(config.never_block)
        limit = config.max_keys
        stuffing = config.credential_stuffing
        self._stuffing = (Burst(stuffing.threshold, stuffing.window, limit),
                          Burst(stuffing.per_subject, stuffing.window, limit),
                          Burst(stuffing.per_consumer, stuffing.window, limit))
        enum = config.enumeration
        self._enum = Distinct(enum.threshold, enum.window, limit)
        usage = config.usage_anomaly
        self._usage = Baseline(usage.threshold, usage.window, usage.factor, usage.baseline, usage.warmup, limit)
        self._input = Burst(config.input_violations.threshold, config.input_violations.window, limit)
        self._forged = Burst(config.forged_tokens.threshold, config.forged_tokens.window, limit)
        self._flows = Burst(config.flow_abuse.threshold, config.flow_abuse.window, limit)
        self._cooldown: BoundedCache[tuple[str, Any], bool] = BoundedCache(limit)  # (detection, key): quiet
        self._shared: Any = None
        self._pending: set[asyncio.Task[None]] = set()
        self._rates: RateSync | None = None  # usage anomaly's counts across processes, once shared

    def share(self, state: Any) -> None:
        """Count the burst detections in `state` (a shared backend), so every process sees the same counts.
        A reload that swaps the backend calls this again (`memory`: this process's windows again)."""
        self._shared = state if getattr(state, "name", "memory") != "memory" else None
        self._rates = None
        if self._shared is not None and self.config.usage_anomaly.enabled:
            usage = self._usage
            self._rates = RateSync(self._shared, usage.window,
                                   lambda key, index, count: usage.sync(key, index, count + self._unsent(key, index)))

    def _unsent(self, key: Any, index: int) -> int:
        return self._rates.since(key, index) if self._rates is not None else 0

    def _count(self, burst: Burst, detection: str, key: tuple[str, Any], now: float,
               fire: Callable[[float], None]) -> None:
        """One event towards a burst: here, or in the shared state (then `fire` runs when the answer comes)."""
        if self._shared is None or len(self._pending) >= MAX_PENDING:
            first = burst.hit(key, now)
            if first is not None:
                fire(first)
            return
        task = asyncio.get_running_loop().create_task(self._count_shared(burst, detection, key, now, fire))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _count_shared(self, burst: Burst, detection: str, key: tuple[str, Any], now: float,
                            fire: Callable[[float], None]) -> None:
        name = f"det:{detection}:{key[0]}:{key[1]}"
        # the threshold-th event within the window is the first one the window refuses
        count = Hit(name, "sliding_window", limit=burst.threshold - 1, period=burst.window)
        try:
            [outcome] = await self._shared.hit([count], now)
            if outcome.allowed:
                return
            # one process fires per key and window: the first to take this single token
            [gate] = await self._shared.hit([Hit(f"{name}:fired", "token_bucket", limit=1, period=burst.window)],
                                            now)
        except StateUnavailable:
            first = burst.hit(key, now)
            if first is not None:
                fire(first)
            return
        if gate.allowed:
            fire(now - burst.window)

    def _gated(self, detection: str, key: tuple[str, Any], window: float, now: float,
               fire: Callable[[], None]) -> None:
        async def gate() -> None:
            try:
                [token] = await self._shared.hit([fired_gate(detection, key, window)], now)
            except StateUnavailable:
                fire()  # cannot ask: this process's finding (at worst one per process)
                return
            if token.allowed:
                fire()

        task = asyncio.get_running_loop().create_task(gate())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _distinct_shared(self, key: tuple[str, Any], value: str, now: float,
                               fire: Callable[[float], None]) -> None:
        """Enumeration counted in the shared state (`distinct_hits`); the local window when it is down."""
        rule = self.config.enumeration
        try:
            seen, count = await self._shared.hit(distinct_hits(key, value, rule.threshold, rule.window), now)
            if not seen.allowed or count.allowed:
                return  # an object id already counted, or still below the threshold
            [gate] = await self._shared.hit([fired_gate("enumeration", key, rule.window)], now)
        except StateUnavailable:
            hit = self._enum.hit(key, value, now)
            if hit is not None:
                fire(hit[1])
            return
        if gate.allowed:
            fire(now - rule.window)

    # ---- the per-request call -----------------------------------------------------------------------------

    def observe(self, ctx: RequestContext, status: int, deny: Deny | None) -> None:
        """Feed one finished request to the detectors. Synchronous; responses run in the background."""
        if not self.enabled:
            return
        reason = deny.reason if deny is not None else ""
        if reason == "blocked":
            return  # already answered
        config = self.config
        now = ctx.start
        identity = ctx.identity
        subject = identity.subject if identity is not None else None
        consumer = identity.consumer if identity is not None else None
        ip = ctx.client_ip
        caller = ("subject", subject) if subject else ("consumer", consumer) if consumer else ("ip", ip)

        if config.usage_anomaly.enabled:
            spike = self._usage.hit(caller, now)
            if self._rates is not None:
                self._rates.add(caller, now)
            if spike is not None:
                rate, baseline = spike
                usage = config.usage_anomaly
                fire = functools.partial(
                    self._fire, "usage_anomaly", usage, caller, int(rate * usage.window), now - usage.window, ctx,
                    3, "Usage far above the caller's baseline", f"{caller[0]} {caller[1]} made {rate:.1f} "
                    f"requests/s against a baseline of {baseline:.2f}/s", (),
                    {"rate": round(rate, 3), "baseline": round(baseline, 4)})
                if self._shared is not None:  # every process sees the same counts: the first one fires
                    self._gated("usage_anomaly", caller, usage.window, now, fire)
                else:
                    fire()
        if deny is None and status not in (403, 404):
            return
        rule: DetectionRule  # one of the rules below, each read for its own threshold and window
        if deny is not None and reason in FORGED_REASONS and config.forged_tokens.enabled:
            forged = config.forged_tokens  # a name of its own: the callback may run after `observe` returned
            self._count(self._forged, "forged_tokens", ("ip", ip), now, lambda first: self._fire(
                "forged_tokens", forged, ("ip", ip), forged.threshold, first, ctx, 4, "Repeated forged tokens",
                f"{forged.threshold} tokens with a bad signature or a refused algorithm from {ip} within "
                f"{forged.window:g}s (last: {reason})", _FORGED_ATTACK))
        if deny is not None and reason in _FLOW_REASONS and config.flow_abuse.enabled:
            flow_rule = config.flow_abuse  # counted like the other bursts: across processes when state is shared
            self._count(self._flows, "flow_abuse", caller, now, lambda first: self._fire(
                "flow_abuse", flow_rule, caller, flow_rule.threshold, first, ctx, 4, "Business flow abuse",
                f"{caller[0]} {caller[1]} broke business flows {flow_rule.threshold} times within "
                f"{flow_rule.window:g}s (last: {reason}, {deny.policy_id})", _FLOW_ATTACK))
            return
        if deny is not None and reason not in NOT_ATTEMPTS and config.credential_stuffing.enabled \
                and is_auth_failure(ctx, deny):
            self._stuffing_hit(ctx, ip, subject, consumer, now)
            return
        if status in (403, 404) and ctx.path_params and config.enumeration.enabled:
            rule = config.enumeration
            object_id = f"{ctx.api}/{ctx.route}:" + "/".join(ctx.path_params.values())
            enum_rule = rule  # a name of its own: the callback may run after `observe` returned
            fire = functools.partial(self._fire_at, "enumeration", enum_rule, caller, enum_rule.threshold, ctx, 4,
                                     "Object enumeration", f"{caller[0]} {caller[1]} was refused "
                                     f"{enum_rule.threshold} distinct objects (403/404) within "
                                     f"{enum_rule.window:g}s: the BOLA scraping pattern", _ENUM_ATTACK)
            if self._shared is not None and len(self._pending) < MAX_PENDING:
                task = asyncio.get_running_loop().create_task(self._distinct_shared(caller, object_id, now, fire))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            else:
                hit = self._enum.hit(caller, object_id, now)
                if hit is not None:
                    fire(hit[1])
        if deny is not None and config.input_violations.enabled and _is_input_violation(ctx, reason):
            inputs = config.input_violations
            self._count(self._input, "input_violations", ("ip", ip), now, lambda first: self._fire(
                "input_violations", inputs, ("ip", ip), inputs.threshold, first, ctx, 3,
                "Burst of input violations", f"{inputs.threshold} requests refused by input validation from {ip} "
                f"within {inputs.window:g}s (last: {reason})", ()))

    def _stuffing_hit(self, ctx: RequestContext, ip: str, subject: str | None, consumer: str | None,
                      now: float) -> None:
        rule = self.config.credential_stuffing
        per_ip, per_subject, per_consumer = self._stuffing
        for burst, key, threshold in ((per_ip, ("ip", ip), rule.threshold),
                                      (per_subject, ("subject", subject), rule.per_subject),
                                      (per_consumer, ("consumer", consumer), rule.per_consumer)):
            if not key[1]:
                continue
            attack = _STUFFING_ATTACK if key[0] == "ip" else _BRUTE_ATTACK
            description = f"{threshold} authentication failures for {key[0]} {key[1]} within {rule.window:g}s"
            self._count(burst, "credential_stuffing", key, now, functools.partial(
                self._fire_at, "credential_stuffing", rule, key, threshold, ctx, 4,
                "Credential stuffing / brute force", description, attack))

    def _fire_at(self, detection: str, rule: DetectionRule, key: tuple[str, Any], count: int,
                 ctx: RequestContext, severity: int, title: str, description: str,
                 attacks: tuple[tuple[str, str, str, str], ...], first: float) -> None:
        self._fire(detection, rule, key, count, first, ctx, severity, title, description, attacks)

    # ---- a finding ----------------------------------------------------------------------------------------

    def _fire(self, detection: str, rule: DetectionRule, key: tuple[str, Any], count: int, first: float,
              ctx: RequestContext, severity: int, title: str, description: str,
              attacks: tuple[tuple[str, str, str, str], ...], extra: dict[str, Any] | None = None) -> None:
        now = ctx.start
        cooldown_key = (detection, key)
        if self._cooldown.get(cooldown_key, now):
            return
        self._cooldown.put(cooldown_key, True, now, now + max(rule.window, rule.block_for if rule.block else 0.0))
        identity = ctx.identity
        subject = identity.subject if identity is not None else None
        consumer = identity.consumer if identity is not None else None
        uid = self.audit.ids.new()
        responses = self._respond(rule, key, ctx.client_ip, subject, consumer, detection, uid)
        event = finding_event(uid, detection=detection, title=title, description=description, severity_id=severity,
                              key_kind=key[0], key=str(key[1]), count=count, window=rule.window,
                              threshold=rule.threshold, first_seen=first, last_seen=now, ip=ctx.client_ip,
                              subject=subject, consumer=consumer, api=ctx.api or None, attacks=attacks,
                              responses=responses, extra=extra)
        self.findings += 1
        self.audit.emit(event)
        if self.metrics is not None:
            self.metrics.detections.labels(detection).inc()
        if self.webhook is not None and rule.webhook:
            self.webhook.send(event)

    def _respond(self, rule: DetectionRule, key: tuple[str, Any], ip: str, subject: str | None,
                 consumer: str | None, detection: str, uid: str) -> list[dict[str, Any]]:
        if not rule.block or self.blocks is None:
            return []
        offender = {"ip": ip, "subject": subject, "consumer": consumer}
        offender[key[0]] = key[1]  # the key that crossed the threshold is the one to block
        kinds = [kind for kind in rule.block if offender.get(kind)] or ["ip"]
        responses: list[dict[str, Any]] = []
        for kind in kinds:
            value = offender[kind]
            if value is None:
                continue
            if value in self._never:
                responses.append({"action": "none", "kind": kind, "key": value, "why": "never_block"})
                continue
            until = self.blocks.place(kind, value, rule.block_for, detection, uid)
            responses.append({"action": "block", "kind": kind, "key": value, "until": until}
                             if until is not None else {"action": "none", "kind": kind, "key": value,
                                                        "why": "max_active_blocks"})
        return responses


def _is_input_violation(ctx: RequestContext, reason: str) -> bool:
    if reason.startswith(INPUT_PREFIXES):
        return True
    records = ctx.records
    return bool(records) and records[-1].control == "input" and records[-1].outcome == "deny"
