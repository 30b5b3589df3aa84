"""The demo IdP over real HTTP, and Bastion's identity stage verifying its tokens end to end."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from bastion.context import Continue, Deny, RequestContext
from bastion.demo.idp import IdpServer, start_idp
from bastion.http.fetch import fetch
from bastion.stages.base import RouteInfo, Services
from bastion.stages.identity import IdentityPolicy, IdentityShared, build
from bastion.stages.identity.config import JwtProviderConfig, ProvidersConfig

ROUTE = RouteInfo(api="orders", route="get", klass="partner", path="/orders/{id}", methods=frozenset({"GET"}))


@pytest.fixture
async def idp() -> AsyncIterator[IdpServer]:
    server = await start_idp("127.0.0.1", 0)
    yield server
    await server.close()


def ctx(token: str) -> RequestContext:
    return RequestContext(method="GET", raw_target="/orders/1", path="/orders/1", query="",
                          headers=[("authorization", f"Bearer {token}")], client_ip="127.0.0.1",
                          request_id="r", start=time.monotonic())


async def test_discovery_jwks_and_token_endpoint(idp: IdpServer) -> None:
    discovery = await fetch(f"{idp.issuer}/.well-known/openid-configuration")
    doc = json.loads(discovery.body)
    assert doc["issuer"] == idp.issuer and doc["jwks_uri"] == f"{idp.issuer}/jwks.json"
    keys = KeySet.import_key_set(json.loads((await fetch(doc["jwks_uri"])).body))
    assert sorted(k.kid for k in keys) == ["demo-es256", "demo-rs256"]
    assert all(not k.is_private for k in keys)

    token = (await fetch(f"{idp.issuer}/token?user=alice&scope=orders:read+admin:all")).body.decode()
    decoded = jwt.decode(token, keys, algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["scope"] == "orders:read"  # scopes the user does not have are not granted
    assert decoded.claims["roles"] == ["admin"] and decoded.claims["aud"] == "api://demo"

    posted = await fetch(f"{idp.issuer}/token", method="POST", body=b"username=bob&alg=RS256",
                         headers=(("Content-Type", "application/x-www-form-urlencoded"),))
    answer = json.loads(posted.body)
    assert answer["token_type"] == "Bearer"
    bob = jwt.decode(answer["access_token"], keys, algorithms=["RS256"])
    assert (bob.claims["sub"], bob.claims["scope"]) == ("bob", "orders:read")

    assert (await fetch(f"{idp.issuer}/token?user=mallory")).status == 400
    assert (await fetch(f"{idp.issuer}/nope")).status == 404


@pytest.mark.parametrize("source", ["jwks_uri", "discovery"])
async def test_bastion_verifies_demo_tokens(idp: IdpServer, source: str) -> None:
    settings = {"jwks_uri": f"{idp.issuer}/jwks.json"} if source == "jwks_uri" else {"discovery": True}
    provider = JwtProviderConfig(name="demo", issuer=idp.issuer, audiences=["api://demo"], **settings)
    shared = IdentityShared(ProvidersConfig(jwt=[provider]), [], Services())
    await shared.start()
    try:
        stage = build(IdentityPolicy(), ROUTE, shared)
        assert stage is not None
        for alg in ("ES256", "RS256"):
            request = ctx(idp.mint("alice", ["orders:read"], alg=alg))
            assert isinstance(await stage.check(request), Continue)
            assert request.identity is not None and request.identity.roles == {"admin"}
        wrong_aud = await stage.check(ctx(idp.mint("bob", aud="api://other")))
        assert isinstance(wrong_aud, Deny) and wrong_aud.reason == "jwt_bad_audience"
        assert shared.jwks_fetch_count == 1
    finally:
        await shared.close()


@pytest.mark.parametrize(("query", "status"), [("ttl=-60", 200), ("ttl=0", 400), ("ttl=x", 400),
                                               ("ttl=999999", 400), ("aud=api://other", 200)])
def test_expired_and_wrong_audience_tokens(query: str, status: int) -> None:
    idp = IdpServer("127.0.0.1")
    got, _, body = idp.respond("GET", f"/token?user=alice&{query}", b"")
    assert got == status
    if status == 200:
        claims = jwt.decode(body, idp.es256).claims
        if "ttl" in query:
            assert claims["exp"] < time.time() and claims["iat"] < claims["exp"]
        else:
            assert claims["aud"] == "api://other"
