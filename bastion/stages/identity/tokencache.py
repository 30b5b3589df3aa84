"""A bounded cache of verified tokens, keyed by the SHA-256 of the token, never outliving the token's `exp`.

The token itself is never stored: a memory dump of the cache does not yield usable credentials. The table is a
`BoundedCache` (LRU with expiry and a protected segment): a flood of never-seen tokens cannot evict the tokens of
clients in steady use, and expired tokens leave as new ones arrive.

What the cache holds for a JWT is a `Credential`: everything a later request with the same token needs, made
once when the token is verified (the verified claims, the consumer it maps to, the immutable `Identity` and the
upstream headers), so that a cache hit builds no object and renders no header.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from bastion.cache import BoundedCache
from bastion.context import Identity
from bastion.stages.identity.consumers import Consumer

T = TypeVar("T")


def token_key(token: str) -> bytes:
    """SHA-256 of the token: the cache's key (the token itself is never stored)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenCache(BoundedCache[bytes, T]):
    """`get(key, now)` returns the value while `now < valid_until`; `put` keeps it until min(expires, now + max_ttl)."""

    __slots__ = ()

    def __init__(self, max_entries: int = 10_000, max_ttl: float = 300.0) -> None:
        super().__init__(max_entries, max_ttl)

    @property
    def max_ttl(self) -> float:
        return self.ttl


class Credential:
    """A verified credential as every request carrying it sees it; immutable once made (the cache shares it).

    `consumer` (a `consumers.Consumer`) and `revoked` come from the config's consumer index, which does not change
    for the life of the `IdentityShared` holding the cache. `upstream` is the identity headers for the upstream,
    in order: `x-bastion-auth-method`, `x-bastion-consumer`, `x-bastion-subject`, then the provider's
    `claim_to_headers`.
    """

    __slots__ = ("consumer", "expires", "identity", "issued_at", "revoked", "thumbprint", "upstream")

    def __init__(self, identity: Identity, consumer: Consumer | None, revoked: bool, issued_at: float | None,
                 expires: float, thumbprint: str | None, upstream: tuple[tuple[str, str], ...]) -> None:
        self.identity = identity
        self.consumer = consumer
        self.revoked = revoked
        self.issued_at = issued_at
        self.expires = expires
        self.thumbprint = thumbprint  # RFC 8705 cnf.x5t#S256, or None for an unbound token
        self.upstream = upstream
