"""Prometheus metrics of the data plane (OpenTelemetry semantic-convention names where one exists)."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily

# Label sets per metric: the config bounds them (routes, reasons); this bound holds whatever a client sends.
# Past it, new label sets are counted under one overflow set (`_other`): totals stay right, memory stays flat,
# and `bastion_metric_overflow_total{metric}` counts what was folded (never a clear-all: series keep counting).
MAX_LABEL_SETS = 10_000
# OpenTelemetry HTTP semantic conventions: a method outside the known set is recorded as `_OTHER`
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"))

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DURATION = "http_server_request_duration_seconds"
_DURATION_HELP = "Duration of requests through the gateway."
_DURATION_LABELS = ["http_request_method", "http_route", "http_response_status_code", "bastion_api",
                    "bastion_class"]
_OVERFLOW = ("_OTHER", "_other", 0, "_other", "_other")  # the label set past MAX_LABEL_SETS


class _Durations:
    """`http_server_request_duration_seconds` from batched rows, through public prometheus_client API only.

    One process: a custom collector reports the cumulative rows at each scrape (nothing runs per request but a
    bucket index and two additions). Workers (`PROMETHEUS_MULTIPROC_DIR` set): the supervisor reads only the
    library's own files, so `flush` replays each bucket's batch through `Histogram.observe` (its mean per
    bucket: bucket counts and the sum stay exact), once a second and off the request path.
    """

    def __init__(self, registry: CollectorRegistry, multiprocess: bool) -> None:
        self._rows: dict[tuple[str, str, int, str, str], list[float]] = {}
        self._known: set[tuple[str, str, int, str, str]] = set()  # label sets seen: at most MAX_LABEL_SETS + 1
        self._histogram: Histogram | None = None
        if multiprocess:
            self._histogram = Histogram(_DURATION, _DURATION_HELP, _DURATION_LABELS, buckets=_BUCKETS,
                                        registry=registry)
        else:
            registry.register(self)

    def add(self, observed: dict[tuple[str, str, int, str, str], list[float]]) -> int:
        """Add the batched rows; returns how many observations were folded into the overflow set."""
        n = len(_BUCKETS) + 1
        folded = 0
        for labels, row in observed.items():
            known = self._known
            if labels not in known:
                if len(known) >= MAX_LABEL_SETS:  # whatever clients send: fold into one overflow set
                    labels = _OVERFLOW
                    folded += int(sum(row[:n]))
                known.add(labels)
            key = labels
            if self._histogram is not None:
                child = self._histogram.labels(key[0], key[1], str(key[2]), key[3], key[4])
                for index in range(n):
                    count = int(row[index])
                    for _ in range(count):
                        child.observe(row[n + index] / count)
                continue
            total = self._rows.get(key)
            if total is None:
                total = self._rows[key] = [0.0] * len(row)
            for index, value in enumerate(row):
                total[index] += value
        return folded

    def collect(self) -> Iterator[HistogramMetricFamily]:
        if self._histogram is not None:
            return
        family = HistogramMetricFamily(_DURATION, _DURATION_HELP, labels=_DURATION_LABELS)
        n = len(_BUCKETS) + 1
        bounds = [*(repr(b) for b in _BUCKETS), "+Inf"]  # as Histogram writes `le` (0.0005, 1.0, 10.0)
        for (method, route, status, api, klass), row in self._rows.items():
            buckets, running = [], 0.0
            for index, bound in enumerate(bounds):
                running += row[index]
                buckets.append((bound, running))
            family.add_metric([method, route, str(status), api, klass], buckets, sum(row[n:]))
        yield family

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(_DURATION, _DURATION_HELP, labels=_DURATION_LABELS)]


class Metrics:
    """The gateway's metrics, on a registry of its own (tests create as many gateways as they like)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, multiprocess: bool | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        if multiprocess is None:
            multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._durations = _Durations(r, multiprocess)
        self.decisions = Counter(
            "bastion_decisions_total", "Security decisions by control, outcome and reason.",
            ["control", "outcome", "reason"], registry=r,
        )
        self.upstream_errors = Counter(
            "bastion_upstream_errors_total", "Upstream failures by reason.", ["reason"], registry=r,
        )
        self.config_info = Gauge("bastion_config_info", "The running config (hash label).", ["hash"], registry=r)
        self.config_reloads = Counter("bastion_config_reloads_total", "Config reloads.", ["result"], registry=r)
        self.exceptions_active = Gauge("bastion_exceptions_active", "Exceptions in force.", registry=r,
                                       multiprocess_mode="livemax")
        self.connections = Gauge("bastion_connections_open", "Open client connections.", registry=r,
                                 multiprocess_mode="livesum")
        overflow = Counter("bastion_metric_overflow_total", "Observations counted under the `_other` label set "
                           f"because their metric already had {MAX_LABEL_SETS} label sets.", ["metric"], registry=r)
        self._overflow_decisions = overflow.labels("bastion_decisions_total")
        self._overflow_durations = overflow.labels(_DURATION)
        self._decisions: dict[tuple[str, str, str], Any] = {}
        # decisions counted since the last `flush`, by (control, outcome, reason): one dict for the life of the
        # process (emptied by `flush`, never replaced), so the request path (the gateway's accounting, compiled) adds
        # to it directly instead of calling `decision` per record
        self.pending_decisions: dict[tuple[str, str, str], int] = {}
        # per label set: a count per bucket (the last one is +Inf), then the seconds observed in each bucket
        self._observed: dict[tuple[str, str, int, str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, api: str, klass: str, seconds: float) -> None:
        """Record a request's duration. Like `decision`, batched on the request path (a bucket index and two
        additions) and handed to Prometheus by `flush`."""
        key = (method if method in _METHODS else "_OTHER", route, status, api, klass)
        row = self._observed.get(key)
        if row is None:
            row = self._observed[key] = [0.0] * (2 * len(_BUCKETS) + 2)
        index = bisect_left(_BUCKETS, seconds)  # the first bucket whose upper bound is >= seconds
        row[index] += 1
        row[len(_BUCKETS) + 1 + index] += seconds

    def decision(self, control: str, outcome: str, reason: str) -> None:
        """Count a decision. A dict increment on the request path; `flush` moves the counts to Prometheus
        (before every scrape, and every second in worker processes, whose metrics a supervisor aggregates)."""
        key = (control, outcome, reason)
        pending = self.pending_decisions
        pending[key] = pending.get(key, 0) + 1

    def posture(self, exceptions_active: int, connections_open: int) -> None:
        """The gauges read from the running state (at each scrape, and each flush in workers)."""
        self.exceptions_active.set(exceptions_active)
        self.connections.set(connections_open)

    def flush(self) -> None:
        pending = dict(self.pending_decisions)
        self.pending_decisions.clear()
        for key, count in pending.items():
            child = self._decisions.get(key)
            if child is None:
                if len(self._decisions) >= MAX_LABEL_SETS:
                    key = (key[0], key[1], "_other")
                    child = self._decisions.get(key)
                    self._overflow_decisions.inc(count)
                if child is None:
                    child = self._decisions[key] = self.decisions.labels(*key)
            child.inc(count)
        observed, self._observed = self._observed, {}
        folded = self._durations.add(observed)
        if folded:
            self._overflow_durations.inc(folded)


def exceptions_in_force(compiled: Any, now: float) -> int:
    """Distinct exceptions the data plane applies at `now`: from the same plan schedule that enforces them."""
    from bastion.posture.controls import plan_at

    return len({e for route in compiled.routes for e in plan_at(route, now).exceptions})
