"""Prometheus metrics of the data plane (OpenTelemetry semantic-convention names where one exists)."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Label sets per metric: the config bounds them (routes, reasons); this bound holds whatever a client sends.
# Past it, new label sets are counted under one overflow set (`_other`): totals stay right, memory stays flat.
MAX_LABEL_SETS = 10_000
# OpenTelemetry HTTP semantic conventions: a method outside the known set is recorded as `_OTHER`
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"))

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The gateway's metrics, on a registry of its own (tests create as many gateways as they like)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "http_server_request_duration_seconds", "Duration of requests through the gateway.",
            ["http_request_method", "http_route", "http_response_status_code", "bastion_api", "bastion_class"],
            buckets=_BUCKETS, registry=r,
        )
        self.decisions = Counter(
            "bastion_decisions_total", "Security decisions by control, outcome and reason.",
            ["control", "outcome", "reason"], registry=r,
        )
        self.upstream_errors = Counter(
            "bastion_upstream_errors_total", "Upstream failures by reason.", ["reason"], registry=r,
        )
        self.config_info = Gauge("bastion_config_info", "The running config (hash label).", ["hash"], registry=r)
        self.config_reloads = Counter("bastion_config_reloads_total", "Config reloads.", ["result"], registry=r)
        self.exceptions_active = Gauge("bastion_exceptions_active", "Exceptions in force.", registry=r)
        self.connections = Gauge("bastion_connections_open", "Open client connections.", registry=r)
        self._decisions: dict[tuple[str, str, str], object] = {}
        self._pending: dict[tuple[str, str, str], int] = {}
        # per label set: a count per bucket (the last one is +Inf), then the sum of the observed seconds
        self._observed: dict[tuple[str, str, int, str, str], list[float]] = {}
        self._durations: set[tuple[str, str, int, str, str]] = set()  # label sets the histogram has

    def observe(self, method: str, route: str, status: int, api: str, klass: str, seconds: float) -> None:
        """Record a request's duration. Like `decision`, batched on the request path (a bucket index and two
        additions) and moved to the Prometheus histogram by `flush`."""
        key = (method if method in _METHODS else "_OTHER", route, status, api, klass)
        row = self._observed.get(key)
        if row is None:
            row = self._observed[key] = [0.0] * (len(_BUCKETS) + 2)
        row[bisect_left(_BUCKETS, seconds)] += 1  # the first bucket whose upper bound is >= seconds
        row[-1] += seconds

    def decision(self, control: str, outcome: str, reason: str) -> None:
        """Count a decision. A dict increment on the request path; `flush` moves the counts to Prometheus
        (before every scrape, and every second in worker processes, whose metrics a supervisor aggregates)."""
        key = (control, outcome, reason)
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, count in pending.items():
            child = self._decisions.get(key)
            if child is None:
                if len(self._decisions) >= MAX_LABEL_SETS:
                    key = (key[0], key[1], "_other")
                    child = self._decisions.get(key)
                if child is None:
                    child = self._decisions[key] = self.decisions.labels(*key)
            child.inc(count)  # type: ignore[attr-defined]
        observed, self._observed = self._observed, {}
        durations = self._durations
        for labels, row in observed.items():
            if labels not in durations:
                if len(durations) >= MAX_LABEL_SETS:
                    labels = ("_OTHER", "_other", 0, "_other", "_other")
                durations.add(labels)
            method, route, status, api, klass = labels
            child = self.request_duration.labels(method, route, str(status), api, klass)
            # prometheus_client keeps one value per bucket and one for the sum: add the batch to them directly
            for index, count in enumerate(row[:-1]):
                if count:
                    child._buckets[index].inc(count)  # type: ignore[attr-defined]
            child._sum.inc(row[-1])  # type: ignore[attr-defined]
