"""Prometheus counters of the identity layer, on the registry the admin listener's `/metrics` serves.

One `IdentityMetrics` per registry: a config reload builds a new `IdentityShared`, which must count on the same
series rather than register them again (prometheus_client refuses duplicates). Without a registry (the CLI,
unit tests) the counters live on a private one that nobody scrapes.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter

_BY_REGISTRY: WeakKeyDictionary[CollectorRegistry, IdentityMetrics] = WeakKeyDictionary()


class IdentityMetrics:
    """JWKS fetches, verified-token cache lookups and received Security Event Tokens."""

    def __init__(self, registry: CollectorRegistry) -> None:
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


def identity_metrics(registry: CollectorRegistry | None) -> IdentityMetrics:
    """The identity counters of `registry` (created on first use), or unexported ones when it is None."""
    if registry is None:
        return IdentityMetrics(CollectorRegistry(auto_describe=True))
    metrics = _BY_REGISTRY.get(registry)
    if metrics is None:
        metrics = _BY_REGISTRY[registry] = IdentityMetrics(registry)
    return metrics
