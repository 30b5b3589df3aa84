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
