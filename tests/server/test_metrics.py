"""The batched metrics: what reaches Prometheus after a flush equals what direct observation would give."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bastion.server import metrics as metrics_module
from bastion.server.metrics import _BUCKETS, Metrics

DURATIONS = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.2, 9.9, 12.0]  # on bounds, between them, past the last


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect() if metric.name == name for s in metric.samples
            if not s.name.endswith("_created")}


@pytest.mark.parametrize("multiprocess", [False, True], ids=["one-process", "workers"])
def test_flushed_durations_equal_direct_observations(multiprocess: bool) -> None:
    metrics = Metrics(multiprocess=multiprocess)
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
    assert samples(metrics.registry, name) == pytest.approx(samples(reference, name))
    metrics.observe("GET", "/items", 200, "shop", "open", 0.05)  # a second batch adds to the first
    direct.labels("GET", "/items", "200", "shop", "open").observe(0.05)
    metrics.flush()
    assert samples(metrics.registry, name) == pytest.approx(samples(reference, name))


def test_no_private_field_of_prometheus_client_is_touched() -> None:
    source = Path(metrics_module.__file__).read_text()
    owners = {owner for owner in re.findall(r"(\w+)\._[a-z]", source)} - {"self"}
    assert owners == set()  # e.g. `child._buckets[i].inc()` reached into the library


def test_decisions_are_counted_at_flush() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.decision("identity", "deny", "token_expired")
    metrics.flush()
    counts = samples(metrics.registry, "bastion_decisions")
    assert counts[("bastion_decisions_total", (("control", "identity"), ("outcome", "deny"),
                                               ("reason", "token_expired")))] == 3


def test_pending_decisions_added_directly_are_counted_and_the_dict_is_kept() -> None:
    # the request path (proxy.Gateway._account) holds this dict and adds to it: flush must empty it, not replace it
    metrics = Metrics()
    pending = metrics.pending_decisions
    pending[("authz", "allow", "")] = 2
    metrics.decision("authz", "allow", "")
    metrics.flush()
    assert metrics.pending_decisions is pending and pending == {}
    pending[("authz", "allow", "")] = 1
    metrics.flush()
    counts = samples(metrics.registry, "bastion_decisions")
    assert counts[("bastion_decisions_total", (("control", "authz"), ("outcome", "allow"), ("reason", "")))] == 4


# every series README.md and the layer documents promise, that one process serving traffic must expose
DOCUMENTED = ("http_server_request_duration_seconds_count", "bastion_decisions_total", "bastion_config_info",
              "bastion_config_reloads_total", "bastion_exceptions_active", "bastion_connections_open",
              "bastion_jwks_fetch_total", "bastion_token_cache_total", "bastion_ssf_sets_total",
              "bastion_audit_events_delivered_total", "bastion_audit_queue_depth")


def _with_ssf(doc: dict[str, Any]) -> None:
    probe = next(p for p in doc["providers"]["jwt"] if p["name"] == "bastion-probe")
    doc["providers"]["ssf"] = [{"name": "caep", "issuer": "https://caep.example.com", "audience": ["bastion"],
                                "algorithms": ["ES256"], "jwks_file": probe["jwks_file"]}]


def _value(text: str, series: str) -> float:
    """The sum of a series' samples in Prometheus text (0 when absent)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(series) and line[len(series)] in "{ ")


async def test_every_documented_series_is_on_metrics_after_real_traffic(tmp_path: Path) -> None:
    from tests.helpers import request
    from tests.posture.conftest import running_demo

    async with running_demo(tmp_path / "demo", _with_ssf) as demo:
        token = demo.idp.mint("alice", ["orders:read"])
        for _ in range(2):  # a miss, then a hit of the verified-token cache
            status, _, _ = await request(demo.port, "GET", "/orders/", {"Authorization": f"Bearer {token}"})
            assert status == 200
        assert (await request(demo.port, "GET", "/catalog/status"))[0] == 200  # through the demo's exception
        status, _, _ = await request(demo.admin_port, "POST", "/ssf/events", {"Content-Type": "application/secevent+jwt"},
                                     b"not-a-set")
        assert status == 400
        assert (await request(demo.admin_port, "POST", "/reload"))[0] == 200
        text = (await request(demo.admin_port, "GET", "/metrics"))[2].decode()
    missing = [series for series in DOCUMENTED if _value(text, series) == 0 and f"\n{series}" not in text]
    assert missing == []
    assert _value(text, "bastion_exceptions_active") == 1  # EXC-DEMO-1, from the plan in force now
    assert _value(text, 'bastion_token_cache_total{result="hit"}') >= 1
    assert _value(text, 'bastion_token_cache_total{result="miss"}') >= 1
    assert _value(text, "bastion_jwks_fetch_total") >= 1
    assert _value(text, "bastion_ssf_sets_total") == 1
    assert _value(text, "http_server_request_duration_seconds_count") >= 3
    # each control's allow of a forwarded request is counted (Gateway._account adds them to the pending dict)
    allowed = re.search(r'bastion_decisions_total\{control="identity",outcome="allow",reason=""\} (\S+)', text)
    assert allowed is not None and float(allowed.group(1)) >= 2

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
    overflow = {dict(labels)["metric"]: value for (name, labels), value in samples(
        metrics.registry, "bastion_metric_overflow").items() if name == "bastion_metric_overflow_total"}
    # every observation past the first `limit` label sets is counted as folded: of the decisions' limit + 500
    # reasons, 500; of the durations' 1 + limit + 500 label sets (the three odd methods share one), 501
    assert overflow == {"bastion_decisions_total": 500, "http_server_request_duration_seconds": 501}


def test_one_label_set_over_the_cap_is_folded_and_counted(monkeypatch):
    from bastion.server import metrics as module

    monkeypatch.setattr(module, "MAX_LABEL_SETS", 10)
    metrics = Metrics()
    for i in range(10):
        metrics.decision("http", "deny", f"reason-{i}")
    metrics.flush()
    overflow = 'bastion_metric_overflow_total{metric="bastion_decisions_total"}'
    text = generate_latest(metrics.registry).decode()
    assert f"{overflow} 0.0" in text and 'reason="_other"' not in text  # at the cap: nothing folded
    metrics.decision("http", "deny", "reason-10")
    metrics.decision("http", "deny", "reason-3")  # a label set already known keeps counting under its own labels
    metrics.flush()
    text = generate_latest(metrics.registry).decode()
    assert f"{overflow} 1.0" in text
    assert 'bastion_decisions_total{control="http",outcome="deny",reason="_other"} 1.0' in text
    assert 'bastion_decisions_total{control="http",outcome="deny",reason="reason-3"} 2.0' in text
