"""The identity stage: credential extraction, RFC 6750 answers, forwarding, consumers, caches, revocation."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import AUDIENCE, ISSUER, Clock, JwksServer, Minter, make_ctx

from bastion.context import Continue, Deny
from bastion.stages.base import RouteInfo, Services
from bastion.stages.identity import IdentityPolicy, IdentityShared, build
from bastion.stages.identity.config import ConsumerConfig, JwtProviderConfig, ProvidersConfig
from bastion.stages.identity.stage import IdentityStage, is_token68


@pytest.fixture
async def shared(jwks_server: JwksServer, clock: Clock) -> AsyncIterator[IdentityShared]:
    provider = JwtProviderConfig(name="corp", issuer=ISSUER, audiences=[AUDIENCE], jwks_uri=f"{jwks_server.url}"
                                 "/jwks.json", claim_to_headers=[{"claim": "scope", "header": "x-user-scope"}])
    consumers = [
        ConsumerConfig(name="web", roles=["reader"], credentials=[{"type": "jwt", "client_id": "web-app"}]),
        ConsumerConfig(name="office", networks=["10.0.0.0/8"],
                       credentials=[{"type": "jwt", "sub": "office-bot"}]),
        ConsumerConfig(name="gone", disabled=True, credentials=[{"type": "jwt", "client_id": "old-app"}]),
    ]
    state = IdentityShared(ProvidersConfig(jwt=[provider]), consumers, Services(wall_clock=clock))
    await state.start()
    yield state
    await state.close()


def stage(shared: IdentityShared, route: RouteInfo, **policy: Any) -> IdentityStage:
    built = build(IdentityPolicy(**policy), route, shared)
    assert built is not None
    return built


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_valid_token_sets_identity_and_upstream_headers(shared: IdentityShared, route: RouteInfo,
                                                             minter: Minter) -> None:
    ctx = make_ctx(bearer(minter.token()))
    decision = await stage(shared, route).check(ctx)
    assert decision == Continue("class:public/orders/list/identity")
    identity = ctx.identity
    assert identity is not None
    assert (identity.method, identity.subject, identity.consumer, identity.issuer, identity.credential_id) == (
        "jwt", "alice", "web", ISSUER, "jti-1")
    assert identity.scopes == {"orders:read", "orders:write"} and identity.roles == {"reader"}
    assert ctx.upstream_headers == [("x-bastion-auth-method", "jwt"), ("x-bastion-consumer", "web"),
                                    ("x-bastion-subject", "alice"), ("x-user-scope", "orders:read orders:write")]
    assert ctx.drop_upstream_headers == {"authorization"}


async def test_forward_credential_keeps_authorization(shared: IdentityShared, route: RouteInfo,
                                                     minter: Minter) -> None:
    ctx = make_ctx(bearer(minter.token()))
    assert isinstance(await stage(shared, route, forward_credential=True).check(ctx), Continue)
    assert ctx.drop_upstream_headers == set()


@pytest.mark.parametrize(("headers", "query", "policy", "status", "reason", "challenge"), [
    ([], "", {}, 401, "jwt_missing", 'Bearer realm="bastion"'),
    ([("authorization", "Basic dXNlcjpwYXNz")], "", {}, 401, "jwt_missing", 'Bearer realm="bastion"'),
    ([("authorization", "Bearer")], "", {}, 400, "credential_malformed",
     'Bearer realm="bastion", error="invalid_request"'),
    ([("authorization", "Bearer a b")], "", {}, 400, "credential_malformed",
     'Bearer realm="bastion", error="invalid_request"'),
    ([("authorization", "Bearer TOKEN"), ("authorization", "Bearer TOKEN")], "", {}, 400,
     "credential_duplicate", 'Bearer realm="bastion", error="invalid_request"'),
    ([("authorization", "Bearer TOKEN")], "access_token=TOKEN", {"allow_query_token": True}, 400,
     "credential_duplicate", 'Bearer realm="bastion", error="invalid_request"'),
    ([], "access_token=TOKEN", {}, 400, "query_token_not_allowed",
     'Bearer realm="bastion", error="invalid_request"'),
    ([("authorization", "Bearer TOKEN"), ("x-api-key", "bsk_abcd_0123456789abcdef")], "",
     {"methods": ["jwt", "api_key"]}, 400, "credential_duplicate",
     'Bearer realm="bastion", error="invalid_request"'),
    ([], "", {"methods": ["jwt", "api_key"]}, 401, "credential_missing", 'Bearer realm="bastion"'),
    ([], "", {"methods": ["api_key"]}, 401, "credential_missing", 'ApiKey realm="bastion"'),
])
async def test_rfc6750_answers(shared: IdentityShared, route: RouteInfo, headers: list[tuple[str, str]],
                               query: str, policy: dict[str, Any], status: int, reason: str,
                               challenge: str) -> None:
    decision = await stage(shared, route, **policy).check(make_ctx(headers, query))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (status, reason)
    assert decision.headers == (("www-authenticate", challenge),)


@pytest.mark.parametrize(("template", "accepted"), [
    ("Bearer {}", True), ("bearer {}", True), ("BEARER   {}  ", True),  # any case, 1*SP, trailing spaces
    ("Bearer\t{}", False), ("Bearer {}@", False), ("Bearer {} x", False), ("Bearer={}", False),
])
async def test_bearer_syntax(shared: IdentityShared, route: RouteInfo, minter: Minter, template: str,
                             accepted: bool) -> None:
    decision = await stage(shared, route).check(make_ctx([("authorization", template.format(minter.token()))]))
    if accepted:
        assert isinstance(decision, Continue)
    else:
        assert isinstance(decision, Deny) and decision.reason == "credential_malformed"


async def test_query_token_when_the_route_allows_it(shared: IdentityShared, route: RouteInfo,
                                                   minter: Minter) -> None:
    ctx = make_ctx(query=f"page=2&access_token={minter.token()}")
    assert isinstance(await stage(shared, route, allow_query_token=True).check(ctx), Continue)
    assert "authorization" not in ctx.drop_upstream_headers


async def test_optional_identity(shared: IdentityShared, route: RouteInfo, minter: Minter) -> None:
    optional = stage(shared, route, required=False)
    ctx = make_ctx()
    assert isinstance(await optional.check(ctx), Continue)
    assert ctx.identity is not None and ctx.identity.method == "anonymous"
    # a credential that is sent is still verified
    bad = await optional.check(make_ctx(bearer(minter.token(aud="other"))))
    assert isinstance(bad, Deny) and bad.reason == "jwt_bad_audience"


@pytest.mark.parametrize(("claims", "client_ip", "policy", "status", "reason"), [
    ({"client_id": "stranger"}, "127.0.0.1", {"require_consumer": True}, 403, "consumer_unknown"),
    ({"client_id": "stranger"}, "127.0.0.1", {}, 200, ""),
    ({"client_id": "old-app"}, "127.0.0.1", {}, 403, "consumer_disabled"),
    ({"client_id": None, "sub": "office-bot"}, "192.0.2.1", {}, 403, "consumer_network_denied"),
    ({"client_id": None, "sub": "office-bot"}, "10.1.2.3", {"require_consumer": True}, 200, ""),
])
async def test_consumers(shared: IdentityShared, route: RouteInfo, minter: Minter, claims: dict[str, Any],
                         client_ip: str, policy: dict[str, Any], status: int, reason: str) -> None:
    ctx = make_ctx(bearer(minter.token(**claims)), client_ip=client_ip)
    decision = await stage(shared, route, **policy).check(ctx)
    if status == 200:
        assert isinstance(decision, Continue)
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (status, reason)
        assert decision.headers == ()


async def test_verified_token_cache_and_revocation_on_hit(shared: IdentityShared, route: RouteInfo,
                                                         minter: Minter, clock: Clock) -> None:
    check = stage(shared, route)
    token = minter.token(exp=int(clock.now) + 60)
    assert isinstance(await check.check(make_ctx(bearer(token))), Continue)
    assert len(shared.token_cache) == 1
    assert isinstance(await check.check(make_ctx(bearer(token))), Continue)  # served from the cache
    await shared.revocations.revoke("jti", "jti-1", clock.now + 3600)
    revoked = await check.check(make_ctx(bearer(token)))
    assert isinstance(revoked, Deny) and (revoked.status, revoked.reason) == (401, "credential_revoked")
    # the cache never outlives exp
    other = minter.token(exp=int(clock.now) + 60, jti="jti-2")
    assert isinstance(await check.check(make_ctx(bearer(other))), Continue)
    clock.now += 100  # past exp and the leeway
    expired = await check.check(make_ctx(bearer(other)))
    assert isinstance(expired, Deny) and expired.reason == "jwt_expired"


async def test_subject_revocation_spares_later_tokens(shared: IdentityShared, route: RouteInfo,
                                                     minter: Minter, clock: Clock) -> None:
    check = stage(shared, route)
    old = minter.token(iat=int(clock.now) - 10)
    await shared.revocations.revoke("sub", "alice", clock.now + 3600, issued_before=clock.now)
    assert isinstance(await check.check(make_ctx(bearer(old))), Deny)
    clock.now += 5
    fresh = Minter(minter.keys, now=clock.now).token(jti="fresh")
    assert isinstance(await check.check(make_ctx(bearer(fresh))), Continue)



@pytest.mark.parametrize("size", [1, 3])
async def test_the_token_cache_holds_providers_token_cache_size_tokens(jwks_server: JwksServer, clock: Clock,
                                                                       route: RouteInfo, minter: Minter,
                                                                       size: int) -> None:
    provider = JwtProviderConfig(name="corp", issuer=ISSUER, audiences=[AUDIENCE], jwks_uri=f"{jwks_server.url}"
                                 "/jwks.json")
    shared = IdentityShared(ProvidersConfig(jwt=[provider], token_cache_size=size), [], Services(wall_clock=clock))
    await shared.start()
    try:
        check = stage(shared, route)
        for i in range(size + 1):  # one token over the configured size
            token = minter.token(exp=int(clock.now) + 60, jti=f"jti-{i}", sub=f"user-{i}")
            assert isinstance(await check.check(make_ctx(bearer(token))), Continue)
            assert len(shared.token_cache) == min(i + 1, size)
        assert shared.token_cache.evictions == 1
    finally:
        await shared.close()


async def test_a_cache_hit_reuses_the_credential_made_once(shared: IdentityShared, route: RouteInfo,
                                                           minter: Minter) -> None:
    check = stage(shared, route)
    token = minter.token()
    first, second = make_ctx(bearer(token)), make_ctx(bearer(token))
    assert isinstance(await check.check(first), Continue) and isinstance(await check.check(second), Continue)
    assert second.identity is first.identity  # the immutable Identity of the cached credential, not a copy
    assert second.upstream_headers == first.upstream_headers == [
        ("x-bastion-auth-method", "jwt"), ("x-bastion-consumer", "web"), ("x-bastion-subject", "alice"),
        ("x-user-scope", "orders:read orders:write")]
    # another route's stage finds the same credential (the cache is shared by every route of the config)
    third = make_ctx(bearer(token))
    assert isinstance(await stage(shared, route, forward_credential=True).check(third), Continue)
    assert third.identity is first.identity and third.drop_upstream_headers == set()
    shared.metrics.flush()
    assert shared.metrics.token_cache_hit._value.get() == 2 and shared.metrics.token_cache_miss._value.get() == 1


@pytest.mark.parametrize(("header", "status", "reason"), [
    ("Bearer {token}", 200, ""),
    ("bearer   {token}", 200, ""),  # the scheme in any case, spaces around the token
    ("Bearer {token} x", 400, "credential_malformed"),  # not the cached token: scanned, and refused
    ("Bearer {token}\t", 400, "credential_malformed"),
    ("Bearer {token}==", 401, "jwt_malformed"),  # token68 allows the padding; a compact JWS does not
])
async def test_a_cached_token_is_looked_up_exactly_as_sent(shared: IdentityShared, route: RouteInfo,
                                                           minter: Minter, header: str, status: int,
                                                           reason: str) -> None:
    check = stage(shared, route)
    token = minter.token()
    assert isinstance(await check.check(make_ctx(bearer(token))), Continue)  # now in the cache
    decision = await check.check(make_ctx([("authorization", header.format(token=token))]))
    if status == 200:
        assert isinstance(decision, Continue)
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (status, reason)


async def test_a_cached_header_token_and_a_second_credential_is_still_a_duplicate(
        shared: IdentityShared, route: RouteInfo, minter: Minter) -> None:
    check = stage(shared, route, allow_query_token=True)
    token = minter.token()
    assert isinstance(await check.check(make_ctx(bearer(token))), Continue)
    decision = await check.check(make_ctx(bearer(token), query=f"access_token={token}"))
    assert isinstance(decision, Deny) and decision.reason == "credential_duplicate"
    query = make_ctx([], query=f"access_token={token}")  # the query token itself: looked up, found, accepted
    assert isinstance(await check.check(query), Continue) and query.drop_query_params == {"access_token"}


@pytest.mark.parametrize("value", [
    "abc", "a-._~+/Z09", "abc=", "abc==", "a=b", "=", "==", "", "abc ", " abc", "a b", "abc\n", "é", "a,b",
    "a" * 5000, "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln", "a\x00", "abc=\n",
])
def test_token68_is_the_rfc_grammar(value: str) -> None:
    assert is_token68(value) is bool(re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", value))
