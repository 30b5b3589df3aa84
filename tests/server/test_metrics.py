"""The batched metrics: what reaches Prometheus after a flush equals what direct observation would give."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from bastion.server.metrics import _BUCKETS, Metrics

DURATIONS = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.2, 9.9, 12.0]  # on bounds, between them, past the last


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect() if metric.name == name for s in metric.samples
            if not s.name.endswith("_created")}


def test_flushed_durations_equal_direct_observations():
    metrics = Metrics()
    reference = CollectorRegistry()
    direct = Histogram("http_server_request_duration_seconds", "", ["http_request_method", "http_route",
                       "http_response_status_code", "bastion_api", "bastion_class"], buckets=_BUCKETS,
                       registry=reference)
    for seconds in DURATIONS:
        metrics.observe("GET", "/items", 200, "shop", "open", seconds)
        direct.labels("GET", "/items", "200", "shop", "open").observe(seconds)
    metrics.observe("POST", "/items", 403, "shop", "open", 0.001)
    direct.labels("POST", "/items", "403", "shop", "open").observe(0.001)
    name = "http_server_request_duration_seconds"
    assert samples(metrics.registry, name) == {}  # nothing before a flush: the request path only batches
    metrics.flush()
    assert samples(metrics.registry, name) == samples(reference, name)
    metrics.observe("GET", "/items", 200, "shop", "open", 0.05)  # a second batch adds to the first
    direct.labels("GET", "/items", "200", "shop", "open").observe(0.05)
    metrics.flush()
    assert samples(metrics.registry, name) == samples(reference, name)


def test_decisions_are_counted_at_flush():
    metrics = Metrics()
    for _ in range(3):
        metrics.decision("identity", "deny", "token_expired")
    metrics.flush()
    counts = samples(metrics.registry, "bastion_decisions")
    assert counts[("bastion_decisions_total", (("control", "identity"), ("outcome", "deny"),
                                               ("reason", "token_expired")))] == 3


def test_label_sets_are_bounded_whatever_clients_send(monkeypatch):
    from bastion.server import metrics as module

    monkeypatch.setattr(module, "MAX_LABEL_SETS", 100)  # the bound's logic, without 10,000 histograms to build
    limit = module.MAX_LABEL_SETS
    metrics = Metrics()
    for i in range(3):
        metrics.observe(f"X-METHOD-{i}", "/items", 405, "shop", "open", 0.001)  # arbitrary method tokens
    for i in range(limit + 500):
        metrics.decision("http", "deny", f"reason-{i}")
        metrics.observe("GET", f"/route-{i}", 200, "shop", "open", 0.001)
    metrics.flush()
    decisions = {labels: value for (name, labels), value in samples(metrics.registry, "bastion_decisions").items()
                 if name == "bastion_decisions_total"}
    assert len(decisions) == limit + 1  # the first ones, then one overflow set
    assert sum(decisions.values()) == limit + 500  # every decision still counted
    counts = {labels: value for (name, labels), value in samples(
        metrics.registry, "http_server_request_duration_seconds").items() if name.endswith("_count")}
    assert len(counts) == limit + 1
    assert sum(counts.values()) == limit + 503
    methods = {dict(labels)["http_request_method"] for labels in counts}
    assert methods == {"GET", "_OTHER"}
