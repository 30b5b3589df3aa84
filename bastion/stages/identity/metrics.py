"""Prometheus counters of the identity layer (registered once per process in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter

JWKS_FETCH = Counter(
    "bastion_jwks_fetch",
    "JWKS and discovery fetches by provider and result (success, error).",
    ["provider", "result"],
)
TOKEN_CACHE = Counter(
    "bastion_token_cache",
    "Verified-token cache lookups by result (hit, miss).",
    ["result"],
)
# the two children, looked up once: `labels()` takes a lock and validates its arguments on every call
TOKEN_CACHE_HIT = TOKEN_CACHE.labels("hit")
TOKEN_CACHE_MISS = TOKEN_CACHE.labels("miss")
