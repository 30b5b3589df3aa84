"""BoundedCache: a bound, expiry, one eviction at a time, and hot keys that a flood of fresh keys cannot flush."""

from __future__ import annotations

import pytest

from bastion.cache import BoundedCache


def test_values_expire_at_their_ttl_or_their_own_expiry():
    cache: BoundedCache[str, int] = BoundedCache(10, ttl=5.0)
    cache.put("a", 1, now=0.0)
    cache.put("b", 2, now=0.0, expires=2.0)
    assert cache.get("a", 4.9) == 1
    assert cache.get("b", 1.9) == 2
    assert cache.get("b", 2.0) is None
    assert cache.get("a", 5.0) is None
    assert len(cache) == 0


def test_nothing_is_kept_past_its_expiry_or_with_no_room():
    cache: BoundedCache[str, int] = BoundedCache(10, ttl=5.0)
    cache.put("a", 1, now=3.0, expires=3.0)
    assert "a" not in cache
    empty: BoundedCache[str, int] = BoundedCache(0)
    empty.put("a", 1, now=0.0)
    assert len(empty) == 0


def test_full_evicts_one_entry_at_a_time_never_everything():
    cache: BoundedCache[int, int] = BoundedCache(100)
    for i in range(100):
        cache.put(i, i, now=0.0)
    cache.put(100, 100, now=0.0)
    assert len(cache) == 100
    assert 0 not in cache  # the least recently used went
    assert all(i in cache for i in range(1, 101))
    assert cache.evictions == 1


def test_a_flood_of_fresh_keys_cannot_flush_keys_in_steady_use():
    cache: BoundedCache[str, int] = BoundedCache(1000, ttl=60.0)
    hot = [f"hot-{i}" for i in range(500)]
    for key in hot:
        cache.put(key, 1, now=0.0)
        assert cache.get(key, 0.0) == 1  # used twice: protected
    for i in range(100_000):  # an attacker's never-repeated tokens, between two uses of the hot keys
        cache.put(f"fresh-{i}", i, now=1.0)
    assert len(cache) == 1000
    assert all(cache.get(key, 2.0) == 1 for key in hot)


def test_protected_segment_is_bounded_and_overflows_to_probation():
    cache: BoundedCache[int, int] = BoundedCache(10, protected=0.5)
    for i in range(10):
        cache.put(i, i, now=0.0)
        cache.get(i, 0.0)
    assert len(cache) == 10
    assert all(i in cache for i in range(10))  # five protected, five moved back to probation: nothing lost
    cache.put(99, 99, now=0.0)
    assert len(cache) == 10


def test_expired_entries_leave_as_writes_go_on():
    cache: BoundedCache[int, int] = BoundedCache(10_000, ttl=1.0)
    for i in range(1000):
        cache.put(i, i, now=0.0)
    for i in range(1000, 1600):  # later writes sweep the stale ones without a full scan
        cache.put(i, i, now=2.0)
    assert len(cache) == 600
    assert cache.evictions == 0


def test_a_table_expiring_at_once_is_swept_in_bounded_batches():
    cache: BoundedCache[int, int] = BoundedCache(10_000, ttl=1.0)
    for i in range(1000):
        cache.put(i, i, now=0.0)
    cache.put(-1, -1, now=2.0)  # one new key does not pay for the whole table
    assert 1 < len(cache) < 1000
    for i in range(1000, 1020):  # the next new keys carry on where it stopped
        cache.put(i, i, now=2.0)
    assert len(cache) == 21
    assert cache.evictions == 0


def test_rewrite_refreshes_value_and_expiry():
    cache: BoundedCache[str, int] = BoundedCache(10, ttl=5.0)
    cache.put("a", 1, now=0.0)
    cache.put("a", 2, now=4.0)
    assert cache.get("a", 8.0) == 2
    assert cache.pop("a") == 2
    assert cache.pop("a") is None


def test_items_lists_only_valid_entries():
    cache: BoundedCache[str, int] = BoundedCache(10)
    cache.put("a", 1, now=0.0, expires=1.0)
    cache.put("b", 2, now=0.0)
    assert dict(cache.items(2.0)) == {"b": 2}


def test_negative_size_is_refused():
    with pytest.raises(ValueError, match="max_entries"):
        BoundedCache(-1)
