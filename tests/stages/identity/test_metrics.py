"""Verified-token cache lookups: counted in plain integers, on the Prometheus counter at each scrape and once a
second of the caller's clock."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from bastion.stages.identity.metrics import identity_metrics


def _series(registry: CollectorRegistry, result: str) -> float:
    text = generate_latest(registry).decode()
    line = next(line for line in text.splitlines() if line.startswith(f'bastion_token_cache_total{{result="{result}"}}'))
    return float(line.rsplit(" ", 1)[1])


def test_a_scrape_sees_every_lookup_counted_so_far() -> None:
    registry = CollectorRegistry()
    metrics = identity_metrics(registry)
    metrics.lookup(True, 100.0)  # the first lookup moves the counts at once
    for _ in range(4):
        metrics.lookup(True, 100.2)
    metrics.lookup(False, 100.3)
    assert metrics.token_cache_hit._value.get() == 1  # not moved yet: within the second
    assert (_series(registry, "hit"), _series(registry, "miss")) == (5.0, 1.0)  # the scrape moved them first
    assert (metrics.hits, metrics.misses) == (0, 0)
    assert identity_metrics(registry) is metrics  # one per registry, across reloads


def test_counts_move_once_a_second_and_when_the_clock_goes_back() -> None:
    metrics = identity_metrics(None)
    metrics.lookup(True, 10.0)
    metrics.lookup(True, 10.5)
    assert metrics.token_cache_hit._value.get() == 1
    metrics.lookup(False, 11.0)  # a second later: both pending lookups move
    assert (metrics.token_cache_hit._value.get(), metrics.token_cache_miss._value.get()) == (2, 1)
    metrics.lookup(True, 5.0)  # an injected clock set back: moved at once, not a second after 11.0
    assert metrics.token_cache_hit._value.get() == 3
