"""The verified-token cache: never past a token's `exp`, bounded, and not flushable by fresh tokens."""

from __future__ import annotations

import hashlib

from bastion.stages.identity.tokencache import TokenCache, token_key


def test_a_token_is_kept_until_its_exp_or_the_cache_ttl():
    cache: TokenCache[str] = TokenCache(100, max_ttl=300.0)
    cache.put(token_key("short"), "s", now=0.0, expires=10.0)
    cache.put(token_key("long"), "l", now=0.0, expires=10_000.0)
    assert cache.get(token_key("short"), 9.9) == "s"
    assert cache.get(token_key("short"), 10.0) is None
    assert cache.get(token_key("long"), 299.0) == "l"
    assert cache.get(token_key("long"), 300.0) is None
    assert cache.max_ttl == 300.0


def test_never_seen_tokens_do_not_flush_tokens_in_use_and_memory_stays_bounded():
    cache: TokenCache[str] = TokenCache(1000)
    regulars = [token_key(f"regular-{i}") for i in range(200)]
    for key in regulars:
        cache.put(key, "ok", now=0.0, expires=3600.0)
        cache.get(key, 0.0)
    for i in range(50_000):  # the soak of the issue: a stream of never-seen tokens
        cache.put(token_key(f"fresh-{i}"), "fresh", now=1.0, expires=3600.0)
    assert len(cache) == 1000
    assert all(cache.get(key, 2.0) == "ok" for key in regulars)


def test_expired_tokens_leave_as_new_ones_arrive_without_the_cache_being_full():
    cache: TokenCache[str] = TokenCache(10_000)
    for i in range(3000):
        cache.put(token_key(f"old-{i}"), "x", now=0.0, expires=60.0)
    for i in range(1600):
        cache.put(token_key(f"new-{i}"), "y", now=120.0, expires=600.0)
    assert len(cache) == 1600  # two stale tokens dropped per write, long before the 10,000 bound


def test_the_key_is_the_sha256_of_the_token_every_time():
    first = token_key("eyJhbGciOiJFUzI1NiJ9.e30.sig")
    assert first == hashlib.sha256(b"eyJhbGciOiJFUzI1NiJ9.e30.sig").digest()
    assert token_key("eyJhbGciOiJFUzI1NiJ9.e30.sig") == first  # the shared hasher is copied, never fed
    assert token_key("other") == hashlib.sha256(b"other").digest() != first
    assert token_key("\udcff") == hashlib.sha256(b"\xff").digest()  # surrogateescape: the raw byte
