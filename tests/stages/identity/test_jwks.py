"""The JWKS cache against a real HTTP JWKS server: start, rotation, kid floods, outages, discovery."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import ISSUER, Clock, JwksServer, Keys, Minter, make_ctx
from joserfc.jwk import ECKey
from prometheus_client import CollectorRegistry

from bastion.context import Continue, Deny
from bastion.stages.base import RouteInfo, Services
from bastion.stages.identity import IdentityPolicy, IdentityShared, IdentityStage, build
from bastion.stages.identity.config import JwksCacheConfig, JwtProviderConfig, ProvidersConfig
from bastion.stages.identity.jwks import JwksCache, JwksUnavailable
from bastion.stages.identity.metrics import identity_metrics


def cache_for(server: JwksServer, mono: Clock, **cfg: float) -> JwksCache:
    return JwksCache("corp", JwksCacheConfig(**cfg), jwks_uri=f"{server.url}/jwks.json", monotonic=mono)


async def jwt_stage(server: JwksServer, route: RouteInfo, mono: Clock) -> tuple[IdentityShared, IdentityStage]:
    """The identity stage of `route` for one JWT provider on `server`, its JWKS fetched at start."""
    cfg = JwtProviderConfig(name="corp", issuer=ISSUER, audiences=["api://orders"], jwks_uri=f"{server.url}/jwks.json")
    shared = IdentityShared(ProvidersConfig(jwt=[cfg]), [], Services(wall_clock=Clock(), monotonic=mono))
    await shared.start()
    stage = build(IdentityPolicy(), route, shared)
    assert stage is not None
    return shared, stage


async def test_fetched_once_at_start(jwks_server: JwksServer) -> None:
    registry = CollectorRegistry()
    cache = JwksCache("corp", JwksCacheConfig(), jwks_uri=f"{jwks_server.url}/jwks.json", monotonic=Clock(1000.0),
                      metrics=identity_metrics(registry))
    await cache.start()
    try:
        assert cache.fetch_count == 1 and jwks_server.hits["/jwks.json"] == 1
        assert [k.kid for k in await cache.keys_for("ec-1", "ES256")] == ["ec-1"]
        assert await cache.keys_for("ec-1", "RS256") == []  # an EC key never verifies RS256
        assert cache.fetch_count == 1
        assert registry.get_sample_value("bastion_jwks_fetch_total", {"provider": "corp", "result": "success"}) == 1
    finally:
        await cache.close()


async def test_flood_of_unknown_kids_fetches_at_most_twice(jwks_server: JwksServer, keys: Keys,
                                                          route: RouteInfo) -> None:
    mono = Clock(1000.0)
    shared, stage = await jwt_stage(jwks_server, route, mono)
    mono.now += 31  # past the cooldown: the first unknown kid may trigger one refetch
    minter = Minter(keys)
    tokens = [minter.token(header={"kid": f"forged-{i}"}) for i in range(1000)]
    decisions = await asyncio.gather(*(stage.check(make_ctx([("authorization", f"Bearer {t}")]))
                                       for t in tokens))
    assert {(d.status, d.reason) for d in decisions if isinstance(d, Deny)} == {(401, "jwt_unknown_kid")}
    assert len(decisions) == 1000
    # the same flood again, and one more, inside the cooldown: no fetch at all
    for token in tokens[:200]:
        await stage.check(make_ctx([("authorization", f"Bearer {token}")]))
    assert shared.jwks_fetch_count <= 2
    assert jwks_server.hits["/jwks.json"] <= 2
    await shared.close()


async def test_key_rotation(jwks_server: JwksServer, keys: Keys, route: RouteInfo) -> None:
    mono = Clock(1000.0)
    shared, stage = await jwt_stage(jwks_server, route, mono)
    new = ECKey.generate_key("P-256", parameters={"kid": "ec-2", "alg": "ES256"})
    token = Minter(keys).token(new)
    # the IdP signs with a key it has not published yet: unknown, and negatively cached for the cooldown
    mono.now += 31
    first = await stage.check(make_ctx([("authorization", f"Bearer {token}")]))
    assert isinstance(first, Deny) and first.reason == "jwt_unknown_kid"
    assert shared.jwks_fetch_count == 2
    # the IdP publishes it (and drops the old one); within the cooldown nothing is refetched
    jwks_server.jwks = keys.public_jwks(new)
    again = await stage.check(make_ctx([("authorization", f"Bearer {token}")]))
    assert isinstance(again, Deny) and shared.jwks_fetch_count == 2
    mono.now += 31
    rotated = await stage.check(make_ctx([("authorization", f"Bearer {token}")]))
    assert isinstance(rotated, Continue)
    assert shared.jwks_fetch_count == 3
    # the retired key is gone
    old = await stage.check(make_ctx([("authorization", f"Bearer {Minter(keys).token(jti='x')}")]))
    assert isinstance(old, Deny) and old.reason == "jwt_unknown_kid"
    await shared.close()


async def test_outage_serves_last_good_keys_for_the_grace_only(jwks_server: JwksServer) -> None:
    mono = Clock(1000.0)
    cache = cache_for(jwks_server, mono, default_ttl=600, min_ttl=60, stale_grace=3600)
    jwks_server.cache_control = "no-cache"
    await cache.start()
    jwks_server.status = 500
    mono.now += 60 + 3000  # expired, inside the grace
    assert await cache.keys_for("ec-1", "ES256")
    mono.now += 1000  # past ttl + grace: one failed refetch, then fail closed
    with pytest.raises(JwksUnavailable):
        await cache.keys_for("ec-1", "ES256")
    assert cache.fetch_count == 2
    with pytest.raises(JwksUnavailable):
        await cache.keys_for("ec-1", "ES256")
    assert cache.fetch_count == 2  # within the cooldown: no hammering of a failing IdP
    jwks_server.status = 200
    mono.now += 31
    assert await cache.keys_for("ec-1", "ES256")
    await cache.close()


async def test_never_fetched_fails_closed_without_hammering(jwks_server: JwksServer) -> None:
    jwks_server.status = 503
    mono = Clock(1000.0)
    cache = cache_for(jwks_server, mono)
    await cache.start()
    results = await asyncio.gather(*(cache.keys_for(f"k{i}", "ES256") for i in range(100)),
                                   return_exceptions=True)
    assert all(isinstance(r, JwksUnavailable) for r in results)
    assert cache.fetch_count == 1
    await cache.close()


async def test_single_flight(jwks_server: JwksServer) -> None:
    jwks_server.delay = 0.2
    cache = cache_for(jwks_server, Clock(1000.0))
    await asyncio.gather(*(cache.refresh() for _ in range(50)))
    assert cache.fetch_count == 1 and jwks_server.hits["/jwks.json"] == 1
    await cache.close()


async def test_background_refresh_before_expiry(jwks_server: JwksServer) -> None:
    jwks_server.cache_control = "public, max-age=0"
    cache = JwksCache("corp", JwksCacheConfig(min_ttl=0.1), jwks_uri=f"{jwks_server.url}/jwks.json")
    await cache.start()
    await asyncio.sleep(0.35)
    assert cache.fetch_count >= 3
    await cache.close()
    count = cache.fetch_count
    await asyncio.sleep(0.2)
    assert cache.fetch_count == count  # close() stops the refresh


@pytest.mark.parametrize(("header", "ttl"), [
    ("max-age=300", 300.0), ("public, max-age=5", 60.0), ("max-age=9999999", 86400.0), ("", 600.0),
    ("no-store", 60.0), ('max-age="120"', 120.0), ("s-maxage=10", 600.0),
])
def test_cache_control_is_bounded(header: str, ttl: float) -> None:
    cache = JwksCache("corp", JwksCacheConfig(), jwks_uri="https://idp.test/jwks")
    assert cache.ttl_for(header) == ttl


async def test_discovery(jwks_server: JwksServer, keys: Keys) -> None:
    jwks_server.issuer = jwks_server.url
    cache = JwksCache("corp", JwksCacheConfig(), discovery_issuer=jwks_server.url, monotonic=Clock(1000.0))
    await cache.start()
    assert await cache.keys_for("rsa-1", "RS256")
    assert jwks_server.hits["/.well-known/openid-configuration"] == 1
    await cache.close()


async def test_discovery_with_foreign_issuer_is_refused(jwks_server: JwksServer) -> None:
    jwks_server.issuer = "https://someone-else.test"
    cache = JwksCache("corp", JwksCacheConfig(), discovery_issuer=jwks_server.url, monotonic=Clock(1000.0))
    await cache.start()
    with pytest.raises(JwksUnavailable):
        await cache.keys_for("ec-1", "ES256")
    assert cache.fetch_count == 0
    await cache.close()


async def test_oversized_or_invalid_jwks_keeps_old_keys(jwks_server: JwksServer) -> None:
    mono = Clock(1000.0)
    cache = cache_for(jwks_server, mono, max_bytes=4096)
    await cache.start()
    # a shared secret is never taken from the network
    jwks_server.jwks = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hs"}]}
    with pytest.raises(ValueError):
        await cache.refresh()
    jwks_server.jwks = {"keys": ["x" * 5000]}
    with pytest.raises(Exception, match="larger"):
        await cache.refresh()
    assert await cache.keys_for("ec-1", "ES256")
    await cache.close()


async def test_jwks_one_byte_over_max_bytes_is_refused(jwks_server: JwksServer) -> None:
    cache = cache_for(jwks_server, Clock(1000.0), max_bytes=4096)
    await cache.start()
    doc = dict(jwks_server.jwks)
    room = 4096 - len(json.dumps({**doc, "pad": ""}))  # the document padded by an ignored member to a size
    jwks_server.jwks = {**doc, "pad": "x" * room}
    await cache.refresh()  # exactly max_bytes: taken
    jwks_server.jwks = {**doc, "pad": "x" * (room + 1)}
    with pytest.raises(Exception, match="larger than 4096 bytes"):
        await cache.refresh()
    assert await cache.keys_for("ec-1", "ES256")  # the keys of the last good fetch stay
    await cache.close()


async def test_the_keys_that_fit_are_remembered_per_key_set_only(jwks_server: JwksServer) -> None:
    mono = Clock(1000.0)
    cache = cache_for(jwks_server, mono, cooldown=1.0)
    first = ECKey.generate_key("P-256", parameters={"kid": "k", "alg": "ES256"})
    other = ECKey.generate_key("P-256", parameters={"kid": "k", "alg": "ES256"})
    jwks_server.jwks = {"keys": [first.as_dict(private=False)]}
    await cache.refresh()
    found = await cache.keys_for("k", "ES256")
    assert [k.thumbprint() for k in found] == [first.thumbprint()]
    assert await cache.keys_for("k", "ES256") is found  # worked out once for this key set
    assert await cache.keys_for("k", "RS256") == []  # the key's type and alg decide, per algorithm
    assert [k.thumbprint() for k in await cache.keys_for(None, "ES256")] == [first.thumbprint()]
    jwks_server.jwks = {"keys": [other.as_dict(private=False)]}  # the same kid, another key
    await cache.refresh()
    assert [k.thumbprint() for k in await cache.keys_for("k", "ES256")] == [other.thumbprint()]
    assert [k.thumbprint() for k in await cache.keys_for(None, "ES256")] == [other.thumbprint()]
    await cache.close()
