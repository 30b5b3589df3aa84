"""SignatureCheck: ECDSA on prepared keys says what joserfc says, for good and bad signatures alike."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Keys, b64, sign
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry

from bastion.stages.identity.signature import SignatureCheck

HEADER = {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}
CLAIMS = {"iss": "https://idp.test", "sub": "a"}


def _public(key: Any, **params: Any) -> ECKey:
    return ECKey.import_key({**key.as_dict(private=False), **params})


def _tampered(token: str) -> str:
    head, _payload, sig = token.split(".")
    other = b64(json.dumps({**CLAIMS, "sub": "b"}).encode())
    return f"{head}.{other}.{sig}"


def _short(token: str) -> str:
    return token[:-4]


CASES = [  # (name, make token, which key verifies, expected)
    ("good", lambda k: sign(k.ec, CLAIMS, HEADER), "ec", True),
    ("other_key", lambda k: sign(k.other_ec, CLAIMS, HEADER), "ec", False),
    ("tampered_payload", lambda k: _tampered(sign(k.ec, CLAIMS, HEADER)), "ec", False),
    ("signature_too_short", lambda k: _short(sign(k.ec, CLAIMS, HEADER)), "ec", False),
    ("key_ops_without_verify", lambda k: sign(k.ec, CLAIMS, HEADER), "ec_sign_only", False),
]


@pytest.mark.parametrize(("name", "make", "which", "expected"), CASES, ids=[c[0] for c in CASES])
def test_ecdsa_on_prepared_keys_agrees_with_joserfc(keys: Keys, name: str, make: Any, which: str,
                                                     expected: bool) -> None:
    registry = JWSRegistry(algorithms=["ES256"], strict_check_header=False)
    key = _public(keys.ec, key_ops=["sign"]) if which == "ec_sign_only" else _public(keys.ec)
    obj = jws.extract_compact(make(keys).encode())
    check = SignatureCheck(registry)
    assert check.ok(obj, key, "ES256") is expected
    assert check.ok(obj, key, "ES256") is expected  # the prepared key, the second time
    try:
        reference = jws.validate_compact(obj, key, registry=registry)
    except Exception:
        reference = False
    assert reference is expected


def test_other_families_go_through_joserfc(keys: Keys) -> None:
    registry = JWSRegistry(algorithms=["RS256"], strict_check_header=False)
    obj = jws.extract_compact(sign(keys.rsa, CLAIMS, {**HEADER, "alg": "RS256", "kid": "rsa-1"}).encode())
    public = keys.rsa.as_dict(private=False)
    assert SignatureCheck(registry).ok(obj, RSAKey.import_key(public), "RS256") is True
    forged = jws.extract_compact(sign(keys.rsa, CLAIMS, {**HEADER, "alg": "RS256"}).encode()[:-8] + b"AAAAAAAA")
    assert SignatureCheck(registry).ok(forged, RSAKey.import_key(public), "RS256") is False


def test_a_registered_header_parameter_of_the_wrong_type_is_refused() -> None:
    check = SignatureCheck(JWSRegistry(algorithms=["ES256"], strict_check_header=False))
    assert check.header_ok(dict(HEADER)) is True
    assert check.header_ok({**HEADER, "x5t": 7}) is False


@pytest.mark.parametrize("header", [
    {"alg": "ES256"}, {"alg": "ES256", "typ": "at+jwt", "kid": "k"}, {"alg": "ES256", "kid": 7},
    {"alg": "ES256", "typ": ["at+jwt"]}, {"typ": "at+jwt"}, {"alg": 1}, {"alg": "ES256", "x5t": 5},
    {"alg": "ES256", "x5t": "t", "cty": "JWT"}, {"alg": "ES256", "crit": ["exp"]}, {"alg": "ES256", "b64": "no"},
    {"alg": "ES256", "jku": "ftp://x"}, {"alg": "ES256", "custom": {"a": 1}},
])
def test_header_check_agrees_with_joserfc_registry(header: dict[str, Any]) -> None:
    registry = JWSRegistry(algorithms=["ES256"], strict_check_header=False)
    try:
        registry.check_header(header)
    except JoseError:
        expected = False
    else:
        expected = True
    assert SignatureCheck(registry).header_ok(header) is expected
