"""A bounded LRU of verified tokens, keyed by the SHA-256 of the token, never outliving the token's `exp`.

The token itself is never stored: a memory dump of the cache does not yield usable credentials.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


def token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenCache(Generic[T]):
    """`get(key, now)` returns the value while `now < valid_until`; `put` evicts the least recently used."""

    def __init__(self, max_entries: int = 10_000, max_ttl: float = 300.0) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self._items: OrderedDict[bytes, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes, now: float) -> T | None:
        item = self._items.get(key)
        if item is None:
            return None
        if now >= item[0]:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: bytes, value: T, now: float, expires: float) -> None:
        """Cache until min(expires, now + max_ttl); nothing is cached when that is already past."""
        until = min(expires, now + self.max_ttl)
        if until <= now or self.max_entries <= 0:
            return
        self._items[key] = (until, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
