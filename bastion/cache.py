"""One bounded cache for every per-key table: least-recently-used with time-to-live, and a protected segment.

Every cache and per-key table of the gateway (verified tokens, identities, blocks looked up, detection windows,
rate-limit counters, leases) is keyed by something a client chooses. A table that clears itself when full lets a
client flush it at will; one that only drops expired entries when full grows with every distinct key. This one
holds at most `max_entries`, evicts one entry at a time, checks expiry on every read, and drops expired entries
from the least recently used ends when a new key arrives: a bounded batch at a time, and once a sweep finds
nothing more to drop, not again for `_SWEEP_INTERVAL` of the caller's clock (a request that only reads or rewrites
keys already held pays no sweep).

It is a segmented LRU (SLRU, as in Caffeine and the Linux page cache): a key enters the probation segment, and
moves to the protected segment when it is used again. Eviction takes from probation first, so a flood of
never-repeated keys (fresh tokens, rotating client addresses) only churns probation: a key in steady use stays.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_FOREVER = float("inf")
_SWEEP_INTERVAL = 1.0  # seconds (caller's clock) between two sweeps of expired entries, done on a new key
_SWEEP_BATCH = 64  # expired entries dropped per segment and sweep at most


class BoundedCache(Generic[K, V]):
    """At most `max_entries` values, each until its expiry (`ttl` seconds after it was put, or earlier).

    Times are whatever clock the caller passes as `now` (monotonic or wall): the cache never reads one itself.
    `protected` is the share of `max_entries` kept for keys used more than once.
    """

    __slots__ = ("_next_sweep", "_probation", "_protected", "_protected_max", "evictions", "max_entries", "ttl")

    def __init__(self, max_entries: int, ttl: float = _FOREVER, *, protected: float = 0.8) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self.ttl = ttl
        self._protected_max = int(max_entries * protected)
        self._probation: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._protected: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.evictions = 0  # entries dropped while still valid, to make room (a metric: the table is too small)
        self._next_sweep = -_FOREVER  # the caller's time from which a new key sweeps expired entries

    def __len__(self) -> int:
        return len(self._probation) + len(self._protected)

    def __contains__(self, key: object) -> bool:
        return key in self._protected or key in self._probation

    def get(self, key: K, now: float) -> V | None:
        """The value while `now` is before its expiry; a hit marks the key as recently (and repeatedly) used."""
        item = self._protected.get(key)
        if item is not None:
            if now >= item[0]:
                del self._protected[key]
                return None
            self._protected.move_to_end(key)
            return item[1]
        item = self._probation.get(key)
        if item is None:
            return None
        del self._probation[key]
        if now >= item[0]:
            return None
        self._promote(key, item)
        return item[1]

    def put(self, key: K, value: V, now: float, expires: float = _FOREVER) -> None:
        """Keep `value` until min(`expires`, now + ttl); nothing is kept when that is already past."""
        until = now + self.ttl
        if expires < until:
            until = expires
        if until <= now or self.max_entries <= 0:
            self.pop(key)
            return
        protected = self._protected
        if key in protected:  # the common rewrite (a counter, a window): no sweep, no eviction
            protected[key] = (until, value)
            protected.move_to_end(key)
            return
        if self._probation.pop(key, None) is not None:  # written again: in steady use
            self._promote(key, (until, value))
            return
        if now >= self._next_sweep:
            self._sweep(now)
        self._probation[key] = (until, value)
        self._shrink()

    def pop(self, key: K) -> V | None:
        item = self._protected.pop(key, None) or self._probation.pop(key, None)
        return None if item is None else item[1]

    def clear(self) -> None:
        self._probation.clear()
        self._protected.clear()

    def items(self, now: float) -> Iterator[tuple[K, V]]:
        """The entries still valid at `now` (a snapshot: the cache may change while it is read)."""
        for segment in (list(self._protected.items()), list(self._probation.items())):
            for key, (until, value) in segment:
                if now < until:
                    yield key, value

    # ---- eviction -----------------------------------------------------------------------------------------

    def _promote(self, key: K, item: tuple[float, V]) -> None:
        protected = self._protected
        protected[key] = item
        if len(protected) > self._protected_max:  # the protected segment's oldest goes back to probation
            old_key, old_item = protected.popitem(last=False)
            self._probation[old_key] = old_item
        self._shrink()

    def _shrink(self) -> None:
        probation = self._probation
        while len(probation) + len(self._protected) > self.max_entries:
            if probation:
                probation.popitem(last=False)
            else:
                self._protected.popitem(last=False)
            self.evictions += 1

    def _sweep(self, now: float) -> None:
        """Drop expired entries from the least recently used end of each segment, at most `_SWEEP_BATCH` each
        time (a request never pays for a whole table expiring at once; while expired entries remain, the next
        new key sweeps again). Entries behind a live one wait for a read to find them expired, or for eviction."""
        more = False
        for segment in (self._probation, self._protected):
            for _ in range(_SWEEP_BATCH):
                if not segment:
                    break
                key = next(iter(segment))
                if segment[key][0] > now:
                    break
                del segment[key]
            else:
                more = True
        self._next_sweep = now if more else now + _SWEEP_INTERVAL
