"""JOSE header hardening shared by access tokens and SETs: one row per rule, each refused by that rule alone.

The hostile tokens are signed with the trusted key, so no later check (kid lookup, signature, claims) could
refuse them instead: if a rule is removed from `jose.py`, its row here is accepted and the test fails.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import NOW, Clock, JwksServer, Keys, Minter, b64, sign
from test_jwt import provider, shared_for
from test_ssf import Sets, transmitter

from bastion.stages.identity import jwt, ssf
from bastion.stages.identity.jose import FORBIDDEN_HEADERS, HeaderFault, check_header, check_typ, normalize_typ
from bastion.stages.identity.jwt import TokenRejected
from bastion.stages.identity.revocation import StateRevocationList
from bastion.stages.identity.ssf import SetReceiver
from bastion.state.memory import MemoryState

GOOD = {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}

# (header changes, rule): every rule once, each header otherwise acceptable
HEADER_RULES: list[tuple[dict[str, Any], str]] = [
    ({"alg": None}, "alg_missing"),
    ({"alg": ["ES256"]}, "alg_missing"),
    ({"alg": "none"}, "alg_none"),
    ({"alg": "NoNe"}, "alg_none"),
    ({"crit": ["exp"], "exp": 1}, "crit"),
    ({"b64": True}, "b64"),
    ({"jku": "https://evil.test/jwks.json"}, "jku"),
    ({"x5u": "https://evil.test/cert.pem"}, "x5u"),
    ({"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}, "jwk"),
    ({"x5c": ["MIIB"]}, "x5c"),
    ({"kid": 7}, "kid"),
    ({"kid": ""}, "kid"),
    ({"kid": "k" * 257}, "kid"),
]


def _header(changes: dict[str, Any]) -> dict[str, Any]:
    header = {**GOOD, **changes}
    return {k: v for k, v in header.items() if v is not None}


@pytest.mark.parametrize(("changes", "rule"), HEADER_RULES, ids=[f"{r}-{i}" for i, (_, r) in enumerate(HEADER_RULES)])
def test_each_header_rule_refuses_by_its_own_name(changes: dict[str, Any], rule: str) -> None:
    fault = check_header(_header(changes))
    assert isinstance(fault, HeaderFault) and fault.rule == rule and fault.detail


@pytest.mark.parametrize("changes", [{}, {"kid": None}, {"kid": "k" * 256}, {"kid": "k"}, {"alg": "RS256"},
                                     {"cty": "JWT"}, {"typ": None}])
def test_an_ordinary_header_passes(changes: dict[str, Any]) -> None:
    assert check_header(_header(changes)) is None


def test_the_key_locating_headers_are_the_rfc_8725_ones() -> None:
    assert set(FORBIDDEN_HEADERS) == {"jku", "x5u", "jwk", "x5c"}


@pytest.mark.parametrize(("typ", "allow_missing", "rule"), [
    ("at+jwt", False, None),
    ("application/AT+JWT", False, None),  # RFC 7515 §4.1.9: prefix optional, case-insensitive
    (None, True, None),
    (None, False, "typ_missing"),
    ("JWT", True, "typ"),
    ("application/jwt", False, "typ"),
    ("secevent+jwt", False, "typ"),
    (7, False, "typ"),
    ("xat+jwt", False, "typ"),
])
def test_typ_is_explicit(typ: Any, allow_missing: bool, rule: str | None) -> None:
    header = _header({"typ": typ})
    fault = check_typ(header, frozenset({"at+jwt"}), allow_missing=allow_missing)
    assert (fault.rule if fault else None) == rule
    if fault is not None:
        assert fault.detail


@pytest.mark.parametrize(("value", "normal"), [("at+jwt", "at+jwt"), ("AT+JWT", "at+jwt"),
                                               ("application/at+jwt", "at+jwt"), ("Application/JWT", "jwt"),
                                               ("applicationjwt", "applicationjwt"), ("x/application/jwt", "x/application/jwt")])
def test_normalize_typ(value: str, normal: str) -> None:
    assert normalize_typ(value) == normal


RULES = sorted({rule for _, rule in HEADER_RULES} | {"typ", "typ_missing"})


def test_every_rule_has_a_public_code_for_tokens_and_for_sets() -> None:
    assert sorted(jwt._HEADER_REASONS) == RULES
    assert sorted(ssf._HEADER_ERRORS) == RULES


# The public codes: a reason for access tokens (the audit event and metrics), an RFC 8935 error for SETs.
PUBLIC = {"alg_missing": ("jwt_alg_not_allowed", "invalid_key"), "alg_none": ("jwt_alg_not_allowed", "invalid_key"),
          "crit": ("jwt_crit_unsupported", "invalid_request"), "b64": ("jwt_crit_unsupported", "invalid_request"),
          "jku": ("jwt_header_not_allowed", "invalid_key"), "x5u": ("jwt_header_not_allowed", "invalid_key"),
          "jwk": ("jwt_header_not_allowed", "invalid_key"), "x5c": ("jwt_header_not_allowed", "invalid_key"),
          "kid": ("jwt_malformed", "invalid_request"), "typ": ("jwt_bad_typ", "invalid_request"),
          "typ_missing": ("jwt_bad_typ", "invalid_request")}


def _signed(keys: Keys, claims: dict[str, Any], header: dict[str, Any]) -> str:
    """Signed with the trusted key, so only a header rule can refuse it; `alg` none/absent cannot be signed."""
    if not isinstance(header.get("alg"), str):
        return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(b'sig')}"
    return sign(keys.ec, claims, {**header, "alg": header["alg"] if header["alg"].lower() == "none" else "ES256"})


# joserfc already refuses a header without an alg string when it decodes the token (jwt_malformed), so
# `alg_missing` is defence in depth, pinned by the table above only.
TOKEN_ROWS = [*[(c, r) for c, r in HEADER_RULES if r != "alg_missing"], ({"typ": "JWT"}, "typ"),
              ({"typ": None}, "typ_missing")]


@pytest.mark.parametrize(("changes", "rule"), TOKEN_ROWS, ids=[f"{r}-{i}" for i, (_, r) in enumerate(TOKEN_ROWS)])
async def test_access_tokens_are_refused_by_the_rule(jwks_server: JwksServer, keys: Keys, minter: Minter,
                                                     changes: dict[str, Any], rule: str) -> None:
    shared = await shared_for(provider(jwks_server.url))
    try:
        await shared.verifier.verify(_signed(keys, minter.claims(), _header({})))  # the same token, unchanged
        with pytest.raises(TokenRejected) as refused:
            await shared.verifier.verify(_signed(keys, minter.claims(), _header(changes)))
        assert (refused.value.rule, refused.value.reason) == (rule, PUBLIC[rule][0])
        assert refused.value.log_detail != refused.value.reason  # the operator reads which parameter, not the code
    finally:
        await shared.close()


@pytest.fixture
async def receiver(keys: Keys, clock: Clock) -> AsyncIterator[SetReceiver]:
    server = await JwksServer(keys.public_jwks(keys.ec)).start()
    store = StateRevocationList(MemoryState(), clock)
    rx = SetReceiver([transmitter(server, subject_issuers=["https://idp.test"])], store, store)
    await rx.start()
    yield rx
    await rx.close()
    await server.close()


@pytest.mark.parametrize(("changes", "rule"), TOKEN_ROWS, ids=[f"{r}-{i}" for i, (_, r) in enumerate(TOKEN_ROWS)])
async def test_sets_are_refused_by_the_rule(receiver: SetReceiver, keys: Keys, changes: dict[str, Any],
                                            rule: str) -> None:
    sets = Sets(keys)
    header = {**_header(changes), "typ": "secevent+jwt"} if "typ" not in changes else _header(changes)
    good = _signed(keys, sets.claims(), {**_header({}), "typ": "secevent+jwt"}).encode()
    assert (await receiver.handle(good, ssf.CONTENT_TYPE, NOW))[0] == 202  # the same SET, unchanged
    status, body = await receiver.handle(_signed(keys, sets.claims(), header).encode(), ssf.CONTENT_TYPE, NOW)
    assert (status, json.loads(body)["err"]) == (400, PUBLIC[rule][1])
    with pytest.raises(ssf.SetRejected) as refused:
        await receiver.receive(_signed(keys, sets.claims(), header).encode(), ssf.CONTENT_TYPE, NOW)
    assert refused.value.rule == rule
