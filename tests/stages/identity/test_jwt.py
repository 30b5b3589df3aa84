"""Hostile and valid JWT access tokens against a real JWKS server (RFC 8725 / RFC 9068 checks)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import AUDIENCE, ISSUER, NOW, Clock, JwksServer, Keys, Minter, b64, make_ctx, sign
from joserfc.jwk import ECKey

from bastion.context import Continue, Deny
from bastion.stages.base import RouteInfo, Services
from bastion.stages.identity import IdentityPolicy, IdentityShared, build
from bastion.stages.identity.config import JwtProviderConfig, ProvidersConfig
from bastion.stages.identity.jwt import (
    JwtVerifier,
    NameSets,
    ProviderVerifier,
    TokenRejected,
    header_value,
    string_set,
)


def provider(url: str, **overrides: Any) -> JwtProviderConfig:
    base: dict[str, Any] = {"name": "corp", "issuer": ISSUER, "audiences": [AUDIENCE],
                            "algorithms": ["ES256", "RS256"], "jwks_uri": f"{url}/jwks.json",
                            "claim_to_headers": [{"claim": "client_id", "header": "x-client-id"}]}
    base.update(overrides)
    return JwtProviderConfig.model_validate(base)


async def shared_for(*providers: JwtProviderConfig, clock: Clock | None = None) -> IdentityShared:
    clock = clock or Clock()
    shared = IdentityShared(ProvidersConfig(jwt=list(providers)), [], Services(wall_clock=clock))
    await shared.start()
    return shared


def attacker_pem_hs256(m: Minter, k: Keys) -> str:
    # RFC 8725 §2.1: the RSA public key (as its PEM bytes) used as an HMAC secret. joserfc itself refuses to
    # build such a key, so the attacker's token is made by hand.
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}).encode())
    payload = b64(json.dumps(m.claims()).encode())
    mac = hmac.new(k.rsa.as_pem(private=False), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def injected_jwk(m: Minter, k: Keys) -> str:
    attacker = ECKey.generate_key("P-256")
    header = {"alg": "ES256", "typ": "at+jwt", "jwk": attacker.as_dict(private=False)}
    return sign(attacker, m.claims(), header)


def injected_jku(m: Minter, k: Keys) -> str:
    return m.token(header={"jku": "https://evil.example/jwks.json"})


def jwe_like(m: Minter, k: Keys) -> str:
    return ".".join([b64(json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM"}).encode()), "a", "b", "c", "d"])


Builder = Callable[[Minter, Keys], str]
CASES: list[tuple[str, Builder, int, str]] = [
    ("valid ES256", lambda m, k: m.token(), 200, ""),
    ("valid RS256", lambda m, k: m.token(k.rsa), 200, ""),
    ("typ with application/ prefix", lambda m, k: m.token(header={"typ": "application/AT+JWT"}), 200, ""),
    ("aud list containing ours", lambda m, k: m.token(aud=["other", AUDIENCE]), 200, ""),
    ("expired within leeway", lambda m, k: m.token(exp=int(NOW) - 10), 200, ""),
    ("alg none", lambda m, k: sign(None, m.claims(), {"alg": "none", "typ": "at+jwt", "kid": "ec-1"}),
     401, "jwt_alg_not_allowed"),
    ("alg None mixed case", lambda m, k: sign(None, m.claims(), {"alg": "nOnE", "typ": "at+jwt"}),
     401, "jwt_alg_not_allowed"),
    ("HS256 signed with the RSA public key PEM", attacker_pem_hs256, 401, "jwt_alg_not_allowed"),
    ("alg outside the allowlist", lambda m, k: m.token(
        ECKey.generate_key("P-384", parameters={"kid": "p384"}), header={"alg": "ES384"}),
     401, "jwt_alg_not_allowed"),
    ("RS256 token naming the EC key", lambda m, k: m.token(k.rsa, header={"kid": "ec-1"}),
     401, "jwt_unknown_kid"),
    ("wrong key, same kid", lambda m, k: m.token(k.other_ec), 401, "jwt_bad_signature"),
    ("stripped signature", lambda m, k: m.token().rsplit(".", 1)[0] + ".", 401, "jwt_bad_signature"),
    ("tampered payload", lambda m, k: ".".join([m.token().split(".")[0], b64(json.dumps(m.claims(
        sub="root")).encode()), m.token().split(".")[2]]), 401, "jwt_bad_signature"),
    ("expired", lambda m, k: m.token(exp=int(NOW) - 100, iat=int(NOW) - 400), 401, "jwt_expired"),
    ("future nbf", lambda m, k: m.token(nbf=int(NOW) + 120), 401, "jwt_not_yet_valid"),
    ("future iat", lambda m, k: m.token(iat=int(NOW) + 120), 401, "jwt_not_yet_valid"),
    ("wrong iss", lambda m, k: m.token(iss="https://evil.test"), 401, "jwt_bad_issuer"),
    ("iss with trailing slash", lambda m, k: m.token(iss=ISSUER + "/"), 401, "jwt_bad_issuer"),
    ("wrong aud", lambda m, k: m.token(aud="api://payments"), 401, "jwt_bad_audience"),
    ("missing aud", lambda m, k: m.token(aud=None), 401, "jwt_bad_audience"),
    ("missing exp", lambda m, k: m.token(exp=None), 401, "jwt_missing_claim"),
    ("exp not a number", lambda m, k: m.token(exp=str(int(NOW) + 60)), 401, "jwt_malformed"),
    ("missing sub", lambda m, k: m.token(sub=None), 401, "jwt_missing_claim"),
    ("lifetime too long", lambda m, k: m.token(exp=int(NOW) + 3 * 86400), 401, "jwt_lifetime_too_long"),
    ("injected jwk header", injected_jwk, 401, "jwt_header_not_allowed"),
    ("injected jku header", injected_jku, 401, "jwt_header_not_allowed"),
    ("x5u header", lambda m, k: m.token(header={"x5u": "https://evil.example/c.pem"}), 401,
     "jwt_header_not_allowed"),
    ("kid traversal", lambda m, k: m.token(header={"kid": "../../etc/passwd"}), 401, "jwt_unknown_kid"),
    ("kid not a string", lambda m, k: m.token(header={"kid": 7}), 401, "jwt_malformed"),
    ("wrong typ", lambda m, k: m.token(header={"typ": "JWT"}), 401, "jwt_bad_typ"),
    ("missing typ", lambda m, k: m.token(header={"typ": None}), 401, "jwt_bad_typ"),
    ("oversized", lambda m, k: m.token(pad="x" * 9000), 401, "jwt_too_large"),
    ("unknown crit", lambda m, k: m.token(header={"crit": ["exp"], "exp": 1}), 401, "jwt_crit_unsupported"),
    ("JWE", jwe_like, 401, "jwe_unsupported"),
    ("garbage", lambda m, k: "not-a-token", 401, "jwt_malformed"),
    ("header without alg", lambda m, k: f"{b64(b'{}')}.{b64(b'{}')}.{b64(b'sig')}", 401, "jwt_malformed"),
    ("payload not JSON", lambda m, k: b64(json.dumps({"alg": "ES256"}).encode()) + ".bm9wZQ.c2ln", 401,
     "jwt_malformed"),
]


@pytest.mark.parametrize(("name", "builder", "status", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_tokens(jwks_server: JwksServer, keys: Keys, minter: Minter, route: RouteInfo,
                      name: str, builder: Builder, status: int, reason: str) -> None:
    shared = await shared_for(provider(jwks_server.url))
    try:
        stage = build(IdentityPolicy(), route, shared)
        assert stage is not None
        ctx = make_ctx([("authorization", f"Bearer {builder(minter, keys)}")])
        decision = await stage.check(ctx)
        if status == 200:
            assert isinstance(decision, Continue), decision
            assert ctx.identity is not None and ctx.identity.subject == "alice"
        else:
            assert isinstance(decision, Deny)
            assert (decision.status, decision.reason) == (status, reason), decision.log_detail
            assert decision.log_detail and reason not in (decision.log_detail, f"identity: {reason}")  # says why
            challenge = 'Bearer realm="bastion", error="invalid_token"'
            assert decision.headers == (("www-authenticate", challenge),)
            assert ctx.identity is None
            # the client learns the RFC error code only, never which check failed
            assert reason not in (decision.detail or "")
    finally:
        await shared.close()


async def test_hmac_allowed_but_key_is_rsa(tmp_path: Path, keys: Keys, minter: Minter,
                                           route: RouteInfo) -> None:
    """Even a provider that allows HS256 never uses an RSA key as the HMAC secret."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.public_jwks(keys.rsa)))
    cfg = JwtProviderConfig(name="file", issuer=ISSUER, audiences=[AUDIENCE], algorithms=["RS256", "HS256"],
                            jwks_file=jwks)
    shared = await shared_for(cfg)
    stage = build(IdentityPolicy(), route, shared)
    assert stage is not None
    decision = await stage.check(make_ctx([("authorization", f"Bearer {attacker_pem_hs256(minter, keys)}")]))
    assert isinstance(decision, Deny) and decision.reason == "jwt_unknown_kid"
    ok = await stage.check(make_ctx([("authorization", f"Bearer {minter.token(keys.rsa)}")]))
    assert isinstance(ok, Continue)
    await shared.close()


async def test_typ_override_and_missing_typ(jwks_server: JwksServer, minter: Minter,
                                            route: RouteInfo) -> None:
    shared = await shared_for(provider(jwks_server.url, typ="JWT", allow_missing_typ=True))
    stage = build(IdentityPolicy(), route, shared)
    assert stage is not None
    cases = (({"typ": "JWT"}, Continue), ({"typ": None}, Continue), ({"typ": "at+jwt"}, Deny))
    for header, expected in cases:
        decision = await stage.check(make_ctx([("authorization", f"Bearer {minter.token(header=header)}")]))
        assert isinstance(decision, expected), (header, decision)
    await shared.close()


async def test_two_providers_matched_by_exact_issuer(jwks_server: JwksServer, keys: Keys,
                                                     route: RouteInfo) -> None:
    other = JwksServer(keys.public_jwks(keys.other_ec))
    await other.start()
    try:
        shared = await shared_for(provider(jwks_server.url),
                                  provider(other.url, name="partner", issuer="https://partner.test"))
        stage = build(IdentityPolicy(), route, shared)
        assert stage is not None
        partner = Minter(keys).token(keys.other_ec, iss="https://partner.test")
        decision = await stage.check(make_ctx([("authorization", f"Bearer {partner}")]))
        assert isinstance(decision, Continue)
        # the partner's key does not verify a token claiming the corporate issuer
        forged = Minter(keys).token(keys.other_ec)
        decision = await stage.check(make_ctx([("authorization", f"Bearer {forged}")]))
        assert isinstance(decision, Deny) and decision.reason == "jwt_bad_signature"
        await shared.close()
    finally:
        await other.close()


async def test_jwks_unavailable_is_503(keys: Keys, minter: Minter, route: RouteInfo) -> None:
    dead = JwksServer(keys.public_jwks(keys.ec))
    await dead.start()
    url = dead.url
    await dead.close()  # nothing listens there any more
    shared = await shared_for(provider(url))
    stage = build(IdentityPolicy(), route, shared)
    assert stage is not None
    decision = await stage.check(make_ctx([("authorization", f"Bearer {minter.token()}")]))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (503, "jwks_unavailable")
    assert decision.log_detail and "jwks_unavailable" not in decision.log_detail  # the fetch error itself
    assert not shared.ready()
    await shared.close()


# ---- the claim checks on their own, at their boundaries (no network: the signature is not involved) ----------

def claims_verifier(**overrides: Any) -> ProviderVerifier:
    return ProviderVerifier(provider("http://127.0.0.1:9", **overrides), None)  # type: ignore[arg-type]


def _claims(**changes: Any) -> dict[str, Any]:
    return Minter(None).claims(**changes)  # type: ignore[arg-type]


CLAIM_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    ("valid", {}, {}, None),
    ("exp inside the leeway", {"exp": int(NOW) - 29, "iat": int(NOW) - 100}, {}, None),
    ("exp at the end of the leeway", {"exp": int(NOW) - 30, "iat": int(NOW) - 100}, {}, "jwt_expired"),
    ("exp missing", {"exp": None}, {}, "jwt_missing_claim"),
    ("exp a bool", {"exp": True}, {}, "jwt_malformed"),
    ("exp NaN (JSON NaN: every comparison with it is false)", {"exp": float("nan")}, {}, "jwt_malformed"),
    ("exp infinite (JSON 1e400)", {"exp": float("inf")}, {}, "jwt_malformed"),
    ("nbf NaN", {"nbf": float("nan")}, {}, "jwt_malformed"),
    ("iat minus infinity", {"iat": float("-inf")}, {}, "jwt_malformed"),
    ("exp an integer too large for a float", {"exp": 10**400}, {}, "jwt_malformed"),
    ("nbf a second ahead", {"nbf": int(NOW) + 1}, {}, None),
    ("nbf at the end of the leeway", {"nbf": int(NOW) + 30}, {}, None),
    ("nbf past the leeway", {"nbf": int(NOW) + 31}, {}, "jwt_not_yet_valid"),
    ("iat a second ahead", {"iat": int(NOW) + 1}, {}, None),
    ("iat at the end of the leeway", {"iat": int(NOW) + 30}, {}, None),
    ("iat past the leeway", {"iat": int(NOW) + 31}, {}, "jwt_not_yet_valid"),
    ("no leeway", {"nbf": int(NOW) + 1}, {"leeway": 0}, "jwt_not_yet_valid"),
    ("lifetime exactly the maximum", {"iat": int(NOW), "exp": int(NOW) + 86400}, {}, None),
    ("lifetime a second over", {"iat": int(NOW), "exp": int(NOW) + 86401}, {}, "jwt_lifetime_too_long"),
    ("lifetime counted from iat", {"iat": int(NOW) - 86400, "exp": int(NOW) + 10}, {}, "jwt_lifetime_too_long"),
    ("lifetime counted from now without iat", {"iat": None, "exp": int(NOW) + 86401}, {"required_claims": ["sub"]},
     "jwt_lifetime_too_long"),
    ("aud a list naming us", {"aud": ["other", AUDIENCE]}, {}, None),
    ("aud is never split on spaces", {"aud": f"{AUDIENCE} other"}, {}, "jwt_bad_audience"),
    ("a required claim missing", {"sub": None}, {}, "jwt_missing_claim"),
    ("sub not required and absent", {"sub": None}, {"required_claims": ["iat"]}, None),
    ("sub not a string", {"sub": 7}, {}, "jwt_malformed"),
    ("jti absent", {"jti": None}, {}, None),
    ("jti not a string", {"jti": 7}, {}, "jwt_malformed"),
    ("cnf with a certificate thumbprint", {"cnf": {"x5t#S256": "thumb"}}, {}, None),
    ("cnf without a thumbprint", {"cnf": {"jkt": "x"}}, {}, "jwt_malformed"),
    ("cnf thumbprint not a string", {"cnf": {"x5t#S256": 7}}, {}, "jwt_malformed"),
    ("cnf not an object", {"cnf": "thumb"}, {}, "jwt_malformed"),
]


@pytest.mark.parametrize(("name", "changes", "overrides", "reason"), CLAIM_CASES, ids=[c[0] for c in CLAIM_CASES])
def test_claims_at_their_boundaries(name: str, changes: dict[str, Any], overrides: dict[str, Any],
                                    reason: str | None) -> None:
    verifier = claims_verifier(**overrides)
    claims = _claims(**changes)
    if reason is None:
        token = verifier._claims(claims, NOW)
        assert token.claims == claims and token.provider == "corp" and token.issuer == ISSUER
    else:
        with pytest.raises(TokenRejected) as refused:
            verifier._claims(claims, NOW)
        assert refused.value.reason == reason and refused.value.status == 401
        assert refused.value.log_detail not in ("", reason)  # the operator learns which value failed, not just the code


def test_what_a_verified_token_carries() -> None:
    claims = _claims(azp="spa", client_id=None, roles=["admin", "ops"], scope="a b", cnf={"x5t#S256": "thumb"},
                     jti="j-9", iat=int(NOW) - 5)
    token = claims_verifier()._claims(claims, NOW)
    assert (token.subject, token.jti, token.issued_at, token.expires) == ("alice", "j-9", NOW - 5, NOW + 300)
    assert token.client_id == "spa"  # `azp` when the consumer claim is absent
    assert token.roles == frozenset({"admin", "ops"}) and token.scopes == frozenset({"a", "b"})
    assert token.cnf_x5t == "thumb" and token.method == "jwt"
    assert token.headers == ()  # client_id absent: nothing to forward
    assert claims_verifier(roles_claim=None)._claims(claims, NOW).roles == frozenset()
    assert claims_verifier(scope_claim="scp")._claims({**claims, "scp": ["x"]}, NOW).scopes == frozenset({"x"})
    assert claims_verifier()._claims(_claims(client_id=7), NOW).client_id is None  # not a string: no consumer
    assert claims_verifier()._claims(_claims(), NOW).client_id == "web-app"


def test_claims_become_upstream_headers_only_when_safe() -> None:
    verifier = claims_verifier(claim_to_headers=[{"claim": "client_id", "header": "x-client-id"},
                                                 {"claim": "roles", "header": "x-roles"},
                                                 {"claim": "nested", "header": "x-nested"}])
    token = verifier._claims(_claims(roles=["a", "b"], nested={"k": 1}), NOW)
    assert token.headers == (("x-client-id", "web-app"), ("x-roles", "a,b"))


@pytest.mark.parametrize(("value", "text"), [
    ("plain", "plain"), (["a", "b"], "a,b"), ([], ""), (True, "true"), (7, "7"), (1.5, "1.5"),
    (["a", 1], None), ({"k": "v"}, None), (None, None),
    ("bad\x00", None), ("bad\x1f", None), ("bad\x7f", None), ("ok\x80é", "ok\x80é"), (" ~", " ~"),
    ("x" * 4096, "x" * 4096), ("x" * 4097, None),
])
def test_header_value(value: Any, text: str | None) -> None:
    assert header_value(value) == text


@pytest.mark.parametrize(("value", "split", "result"), [
    ("a b", True, {"a", "b"}), ("a b", False, {"a b"}), (["a", "b c", 1], True, {"a", "b c"}),
    (["a"], False, {"a"}), (7, True, set()), (None, False, set()),
])
def test_string_set(value: Any, split: bool, result: set[str]) -> None:
    assert string_set(value, split=split) == frozenset(result)


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("value", ["a b", "a", "", ["a", "b c"], ["a b"], [], ["a", 1], [["a"]], 7, None, {"a": 1}])
def test_name_sets_read_as_string_set_does(value: Any, split: bool) -> None:
    sets = NameSets(split=split)
    first, again = sets.of(value), sets.of(json.loads(json.dumps(value)))  # an equal value, another object
    assert first == again == string_set(value, split=split)
    assert isinstance(first, frozenset)


def test_name_sets_share_one_set_per_value_and_stay_bounded() -> None:
    sets = NameSets(split=True, max_entries=2)
    read = sets.of("a b")
    assert sets.of("a b") is read  # shared: one set per value, not one per token
    assert sets.of(["a b"]) == {"a b"} and sets.of("a b") is read  # a list is never the string's entry
    assert sets.of(["a", 1]) is not sets.of(["a", 1])  # not a list of strings: read each time
    sets.of("c")
    sets.of("d")  # past max_entries: the least recently used entry ("a b"'s list) went first
    assert len(sets._made) == 2
    assert sets.of("a b") == read


def test_token_rejected_keeps_its_detail_apart_from_its_reason() -> None:
    refused = TokenRejected("jwt_expired", "expired at 1, now 2")
    assert (str(refused), refused.reason, refused.log_detail, refused.status, refused.rule) == (
        "jwt_expired", "jwt_expired", "expired at 1, now 2", 401, "")
    assert TokenRejected("jwt_malformed").log_detail == "jwt_malformed"
    assert TokenRejected("jwks_unavailable", "down", status=503, rule="").status == 503


async def test_size_limits_are_inclusive(jwks_server: JwksServer, minter: Minter) -> None:
    token = minter.token()
    assert JwtVerifier([claims_verifier(max_token_bytes=len(token))]).max_bytes == len(token)
    with pytest.raises(TokenRejected) as refused:
        await JwtVerifier([ProviderVerifier(provider(jwks_server.url, max_token_bytes=len(token) - 1), None)],  # type: ignore[arg-type]
                          ).verify(token)
    assert refused.value.reason == "jwt_too_large"
    assert JwtVerifier([]).max_bytes == 8192  # no provider: the default cap, and every token is refused
    with pytest.raises(TokenRejected) as refused:
        await JwtVerifier([]).verify("x" * 8193)
    assert refused.value.reason == "jwt_too_large" and refused.value.log_detail != "jwt_too_large"
    with pytest.raises(TokenRejected) as refused:
        await JwtVerifier([]).verify(minter.token()[:8192])
    assert refused.value.reason == "jwt_bad_issuer"


async def test_a_token_exactly_at_the_provider_cap_is_verified(jwks_server: JwksServer, minter: Minter) -> None:
    token = minter.token()
    shared = await shared_for(provider(jwks_server.url, max_token_bytes=len(token)))
    try:
        assert (await shared.verifier.verify(token)).subject == "alice"
    finally:
        await shared.close()


async def test_an_unregistered_header_parameter_is_ignored(jwks_server: JwksServer, minter: Minter) -> None:
    shared = await shared_for(provider(jwks_server.url))  # RFC 7515 §4: ignored unless listed in `crit`
    try:
        assert (await shared.verifier.verify(minter.token(header={"x-vendor": 1}))).subject == "alice"
        # a long header is fine up to the verifier's own 2 KiB cap (joserfc's default is 512 bytes)
        long_header = minter.token(header={"x-vendor": "v" * 1200})
        assert (await shared.verifier.verify(long_header)).subject == "alice"
        with pytest.raises(TokenRejected) as refused:
            await shared.verifier.verify(minter.token(header={"x-vendor": "v" * 1600}))
        assert refused.value.reason == "jwt_malformed"
    finally:
        await shared.close()


@pytest.mark.parametrize(("name", "build", "reason"), [
    ("payload a JSON list", lambda m: sign(m.keys.ec, [], {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}),  # type: ignore[arg-type]
     "jwt_malformed"),
    ("iss not a string", lambda m: m.token(iss=["https://idp.test"]), "jwt_bad_issuer"),
    ("a header value joserfc refuses (cty a number)", lambda m: m.token(header={"cty": 7}), "jwt_bad_signature"),
])
async def test_shapes_a_parser_could_trip_on(jwks_server: JwksServer, minter: Minter, name: str, build: Any,
                                            reason: str) -> None:
    shared = await shared_for(provider(jwks_server.url))
    try:
        with pytest.raises(TokenRejected) as refused:
            await shared.verifier.verify(build(minter))
        assert refused.value.reason == reason and refused.value.log_detail != reason
    finally:
        await shared.close()


async def test_each_provider_keeps_its_own_size_cap(jwks_server: JwksServer, minter: Minter) -> None:
    token = minter.token()
    small = provider(jwks_server.url, max_token_bytes=len(token) - 1)
    large = provider(jwks_server.url, name="other", issuer="https://other.test", max_token_bytes=len(token) * 2)
    shared = await shared_for(small, large)
    try:
        assert shared.verifier.max_bytes == len(token) * 2
        with pytest.raises(TokenRejected) as refused:
            await shared.verifier.verify(token)
        assert refused.value.reason == "jwt_too_large" and "corp" in refused.value.log_detail  # names the provider
    finally:
        await shared.close()


async def test_roles_are_a_list_never_a_split_string() -> None:
    token = claims_verifier()._claims(_claims(roles="admin ops"), NOW)
    assert token.roles == frozenset({"admin ops"})


async def test_an_allowed_algorithm_outside_joserfcs_recommended_set_verifies(minter: Minter) -> None:
    """ES384 is allowed by the provider: the verifier's registry holds exactly the provider's algorithms."""
    key = ECKey.generate_key("P-384", parameters={"kid": "p384", "alg": "ES384"})
    server = await JwksServer({"keys": [key.as_dict(private=False)]}).start()
    shared = await shared_for(provider(server.url, algorithms=["ES384"]))
    try:
        token = sign(key, minter.claims(), {"alg": "ES384", "typ": "at+jwt", "kid": "p384"})
        assert (await shared.verifier.verify(token)).subject == "alice"
    finally:
        await shared.close()
        await server.close()
