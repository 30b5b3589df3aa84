"""Prometheus counters of the identity layer, on the registry the admin listener's `/metrics` serves.

One `IdentityMetrics` per registry: a config reload builds a new `IdentityShared`, which must count on the same
series rather than register them again (prometheus_client refuses duplicates). Without a registry (the CLI,
unit tests) the counters live on a private one that nobody scrapes.

Verified-token cache lookups happen on every authenticated request, so they are counted in two plain integers
and moved to the Prometheus counter at most once a second (and before every scrape of this process's
registry): `Counter.inc` takes a lock and checks its argument, about a microsecond a request.
"""

from __future__ import annotations

from collections.abc import Iterator
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric

_BY_REGISTRY: WeakKeyDictionary[CollectorRegistry, IdentityMetrics] = WeakKeyDictionary()
FLUSH_INTERVAL = 1.0  # seconds of the caller's clock between two moves of the lookup counts to Prometheus


class _FlushFirst:
    """Registered before the counters: a scrape of this registry moves pending counts first, yields nothing."""

    def __init__(self, metrics: IdentityMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        self._metrics.flush()
        return iter(())

    def describe(self) -> list[Metric]:
        return []


class IdentityMetrics:
    """JWKS fetches, verified-token cache lookups and received Security Event Tokens."""

    def __init__(self, registry: CollectorRegistry) -> None:
        registry.register(_FlushFirst(self))
        self.jwks_fetch = Counter("bastion_jwks_fetch", "JWKS and discovery fetches by provider and result "
                                  "(success, error).", ["provider", "result"], registry=registry)
        self.token_cache = Counter("bastion_token_cache", "Verified-token cache lookups by result (hit, miss).",
                                   ["result"], registry=registry)
        self.ssf_sets = Counter("bastion_ssf_sets", "Security Event Tokens received, by transmitter and result "
                                "(accepted, or the RFC 8935 error code).", ["transmitter", "result"],
                                registry=registry)
        # the two children, looked up once: `labels()` takes a lock and validates its arguments on every call
        self.token_cache_hit = self.token_cache.labels("hit")
        self.token_cache_miss = self.token_cache.labels("miss")
        self.hits = 0  # lookups not yet moved to the counters
        self.misses = 0
        self.next_flush = 0.0

    def lookup(self, hit: bool, now: float) -> None:
        """Count one verified-token cache lookup (`now`: any clock of the caller, for the flush interval)."""
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        if now >= self.next_flush or now < self.next_flush - FLUSH_INTERVAL:  # due, or the clock went back
            self.next_flush = now + FLUSH_INTERVAL
            self.flush()

    def flush(self) -> None:
        """Move the pending lookup counts to the Prometheus counters."""
        hits, misses = self.hits, self.misses
        self.hits = self.misses = 0
        if hits:
            self.token_cache_hit.inc(hits)
        if misses:
            self.token_cache_miss.inc(misses)


def identity_metrics(registry: CollectorRegistry | None) -> IdentityMetrics:
    """The identity counters of `registry` (created on first use), or unexported ones when it is None."""
    if registry is None:
        return IdentityMetrics(CollectorRegistry(auto_describe=True))
    metrics = _BY_REGISTRY.get(registry)
    if metrics is None:
        metrics = _BY_REGISTRY[registry] = IdentityMetrics(registry)
    return metrics
