"""A bounded cache of verified tokens, keyed by the SHA-256 of the token, never outliving the token's `exp`.

The token itself is never stored: a memory dump of the cache does not yield usable credentials. The table is a
`BoundedCache` (LRU with expiry and a protected segment): a flood of never-seen tokens cannot evict the tokens of
clients in steady use, and expired tokens leave as new ones arrive.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from bastion.cache import BoundedCache

T = TypeVar("T")


def token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenCache(BoundedCache[bytes, T]):
    """`get(key, now)` returns the value while `now < valid_until`; `put` keeps it until min(expires, now + max_ttl)."""

    __slots__ = ()

    def __init__(self, max_entries: int = 10_000, max_ttl: float = 300.0) -> None:
        super().__init__(max_entries, max_ttl)

    @property
    def max_ttl(self) -> float:
        return self.ttl
