"""The compact JWS front end against joserfc as the oracle: the same header and claims for every token joserfc
reads, `Malformed` for every token it refuses, on valid, malformed and hostile tokens built here."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from bastion.stages.identity.compact import Compact, Malformed, b64decode, is_compact_jws
from bastion.stages.identity.jose import check_header

HEADER = {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}
CLAIMS = {"iss": "https://idp.test", "sub": "alice", "aud": "api://orders", "exp": 1_800_000_300}
SIG = "A" * 86  # the shape of an ES256 signature (parsing never checks it)
# the syntax check the verifier made with a regular expression before `is_compact_jws` (its oracle here)
_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(header: Any = None, claims: Any = None, *, raw_header: bytes | None = None,
          raw_claims: bytes | None = None, sig: str = SIG) -> str:
    head = raw_header if raw_header is not None else json.dumps(HEADER if header is None else header).encode()
    body = raw_claims if raw_claims is not None else json.dumps(CLAIMS if claims is None else claims).encode()
    return f"{b64(head)}.{b64(body)}.{sig}"


def oracle(value: str) -> Any:
    """What the verifier did before with joserfc: (header, claims), a header rule, or "malformed"."""
    registry = JWSRegistry(algorithms=["ES256"], strict_check_header=False)
    registry.max_payload_length = 8192
    registry.max_header_length = 2048
    try:
        obj = jws.extract_compact(value.encode("ascii"), registry=registry)
        header = obj.headers()
    except (JoseError, ValueError, TypeError):
        return "malformed"
    fault = check_header(header)
    if fault is not None:
        return fault.rule
    try:
        claims = json.loads(obj.payload)
    except (ValueError, UnicodeDecodeError):
        return "malformed"
    return (header, claims) if isinstance(claims, dict) else "malformed"


def ours(value: str) -> Any:
    try:
        parsed = Compact(value)
    except Malformed:
        return "malformed"
    fault = check_header(parsed.header)
    if fault is not None:
        return fault.rule
    try:
        return parsed.header, parsed.parse_claims()
    except Malformed:
        return "malformed"


def _last_char(value: str, segment: int, char: str) -> str:
    parts = value.split(".")
    parts[segment] = parts[segment][:-1] + char
    return ".".join(parts)


def _noncanonical(value: str, segment: int) -> str:
    """The same bytes with unused low bits set in the last character (RFC 4648 §3.5)."""
    parts = value.split(".")
    last = parts[segment][-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    parts[segment] = parts[segment][:-1] + alphabet[alphabet.index(last) + 1]
    return ".".join(parts)


SAME: list[tuple[str, str]] = [
    ("valid", token()),
    ("empty signature", token(sig="")),
    ("duplicate claim: the last wins", token(raw_claims=b'{"iss":"https://idp.test","sub":"a","sub":"b"}')),
    ("duplicate header member: the last wins", token(raw_header=b'{"alg":"none","alg":"ES256","typ":"at+jwt"}')),
    ("huge integer claim kept exact", token(raw_claims=b'{"iss":"x","n":123456789012345678901234567890}')),
    ("1e400 is infinity", token(raw_claims=b'{"iss":"x","exp":1e400}')),
    ("whitespace around the JSON", token(raw_header=b' {"alg":"ES256"}\n', raw_claims=b'\t{"iss":"x"} ')),
    ("unicode escapes", token(raw_claims=b'{"iss":"x","sub":"\\u00e9\\ud83d\\ude00"}')),
    ("header without alg", token({"typ": "at+jwt"})),
    ("header a JSON number", token(raw_header=b"7")),
    ("header not JSON", token(raw_header=b"{alg:ES256}")),
    ("header JSON with a trailing comma", token(raw_header=b'{"alg":"ES256",}')),
    ("header invalid UTF-8", token(raw_header=b'{"alg":"ES256","x":"\xff"}')),
    ("payload not JSON", token(raw_claims=b"nope")),
    ("payload a JSON list", token(claims=[1, 2])),
    ("payload a JSON string", token(claims="iss")),
    ("payload invalid UTF-8", token(raw_claims=b'{"iss":"\xc3\x28"}')),
    ("payload empty object", token(claims={})),
    ("alg none", token({"alg": "none"})),
    ("jku", token({**HEADER, "jku": "https://evil.test/jwks"})),
    ("jwk", token({**HEADER, "jwk": {"kty": "EC"}})),
    ("kid a number", token({**HEADER, "kid": 7})),
    ("kid empty", token({**HEADER, "kid": ""})),
    ("crit", token({**HEADER, "crit": ["exp"], "exp": 1})),
    ("b64 false without crit", token({**HEADER, "b64": False})),
    ("b64 false with crit", token({**HEADER, "b64": False, "crit": ["b64"]})),
    ("b64 true", token({**HEADER, "b64": True})),
    ("b64 a string", token({**HEADER, "b64": "false"})),
    ("header over 2 KiB", token({**HEADER, "x": "v" * 1600})),
    ("header at 1.2 KiB", token({**HEADER, "x": "v" * 1200})),
    ("signature over 1 KiB", token(sig="A" * 1025)),
    ("signature of 1 KiB", token(sig="A" * 1024)),
    ("header segment of 4n+1 characters", token().replace(".", "A.", 1)),
    ("payload segment of 4n+1 characters", ".".join(
        [p + ("A" if i == 1 else "") for i, p in enumerate(token().split("."))])),
    ("non-canonical header base64", _noncanonical(token(raw_header=b'{"alg":"ES256"}'), 0)),
    ("non-canonical payload base64", _noncanonical(token(raw_claims=b'{"iss":"x"}'), 1)),
    ("header decodes to garbage", _last_char(token(), 0, "_")),
    ("nested arrays in a claim", token(raw_claims=b'{"iss":"x","n":' + b"[" * 200 + b"]" * 200 + b"}")),
    # where orjson (read first) and json differ, json decides: these must come out as json reads them
    ("integer past 64 bits kept exact", token(raw_claims=b'{"iss":"x","n":18446744073709551616}')),
    ("negative integer past 64 bits kept exact", token(raw_claims=b'{"iss":"x","n":-9223372036854775809}')),
    ("largest unsigned 64-bit integer", token(raw_claims=b'{"iss":"x","n":18446744073709551615}')),
    ("a huge integer deep in a list", token(raw_claims=b'{"iss":"x","n":[1,{"m":[99999999999999999999999]}]}')),
    ("floats", token(raw_claims=b'{"iss":"x","exp":1.5e9,"f":-0.0,"g":1e-400}')),
    ("NaN and Infinity", token(raw_claims=b'{"iss":"x","exp":NaN,"nbf":-Infinity}')),
    ("an escaped lone surrogate", token(raw_claims=b'{"iss":"x","sub":"\\ud800"}')),
    ("nesting past orjson's first pass", token(raw_claims=b'{"iss":"x","n":' + b"[" * 40 + b"]" * 40 + b"}")),
    ("nesting deep, under the recursion limit", token(raw_claims=b'{"n":' + b"[" * 500 + b"]" * 500 + b"}")),
    ("header with a huge kid number", token(raw_header=b'{"alg":"ES256","kid":123456789012345678901234567890}')),
]
# where the front end is stricter than joserfc was, and why (each was accepted, or raised out of the stage)
STRICTER: list[tuple[str, str, str]] = [
    ("header with a UTF-8 byte-order mark", token(raw_header=b'\xef\xbb\xbf{"alg":"ES256"}'), "header"),
    ("header in UTF-16", token(raw_header='{"alg":"ES256","typ":"at+jwt"}'.encode("utf-16-le")), "header"),
    ("payload with an encoded surrogate", token(raw_claims=b'{"iss":"\xed\xa0\x80"}'), "payload"),
    ("header a JSON string containing alg", token(raw_header=b'"alg"'), "raised AttributeError"),
    ("header a JSON list containing alg", token(raw_header=b'["alg"]'), "raised AttributeError"),
    ("claims nested past the recursion limit", token(raw_claims=b'{"n":' + b"[" * 3000 + b"]" * 3000 + b"}"),
     "raised RecursionError"),
]


@pytest.mark.parametrize(("name", "value"), SAME, ids=[c[0] for c in SAME])
def test_the_same_as_joserfc(name: str, value: str) -> None:
    assert is_compact_jws(value), "every case here passes the verifier's syntax check first"
    expected = oracle(value)
    assert ours(value) == expected


@pytest.mark.parametrize(("name", "value", "before"), STRICTER, ids=[c[0] for c in STRICTER])
def test_stricter_than_joserfc_where_it_was_lax(name: str, value: str, before: str) -> None:
    assert ours(value) == "malformed"
    try:
        result = oracle(value)
    except (AttributeError, RecursionError):
        assert before.startswith("raised")
    else:
        assert result != "malformed"  # joserfc read it


def test_the_parts_it_keeps() -> None:
    value = token()
    parsed = Compact(value)
    head, body, sig = value.split(".")
    assert parsed.segments == (head, body, sig) and parsed.signature == sig
    assert parsed.signing_input == f"{head}.{body}".encode()
    assert parsed.header == HEADER and parsed.payload == json.dumps(CLAIMS).encode()
    assert parsed.claims is None and parsed.parse_claims() == CLAIMS and parsed.claims == CLAIMS
    assert parsed.signature_bytes() == b64decode(sig) == b"\x00" * 64


@pytest.mark.parametrize(("sig", "result"), [
    ("QUJD", b"ABC"), ("-_-_", b"\xfb\xff\xbf"), ("", b""), ("QR", None), ("QUJDR", None), ("Q", None),
])
def test_the_signature_decodes_as_b64decode_does(sig: str, result: bytes | None) -> None:
    parsed = Compact(token(sig=sig))
    if result is None:
        with pytest.raises(ValueError):
            b64decode(sig)
        with pytest.raises(ValueError):
            parsed.signature_bytes()
    else:
        assert parsed.signature_bytes() == b64decode(sig) == result


@pytest.mark.parametrize("char", ["+", "/", "=", "é"])
@pytest.mark.parametrize("segment", [0, 1, 2])
def test_outside_the_base64url_alphabet_is_malformed_in_any_segment(char: str, segment: int) -> None:
    parts = token().split(".")
    parts[segment] = parts[segment][:4] + char + parts[segment][5:]  # one character replaced, the length kept
    with pytest.raises(Malformed):
        Compact(".".join(parts))


@pytest.mark.parametrize(("segment", "result"), [
    ("", b""), ("QQ", b"A"), ("QUI", b"AB"), ("QUJD", b"ABC"), ("-_-_", b"\xfb\xff\xbf"),
    ("QR", None), ("QUJ", None), ("Q", None), ("QQ==", None), ("QQ=", None), ("Q+", None), ("Q/", None),
    ("Q Q", None), ("QQ\n", None),
])
def test_b64decode_is_strict(segment: str, result: bytes | None) -> None:
    if result is None:
        with pytest.raises(ValueError):
            b64decode(segment)
    else:
        assert b64decode(segment) == result


@pytest.mark.parametrize("value", [
    token(), token(sig=""), "a.b.c", "a.b.", "a-_.b_-.c-_", ".b.c", "a..c", "..", "a.b", "a.b.c.d", "a.b.c.d.e",
    "a.b.c\n", "a.b.c ", " a.b.c", "a+b.c.d", "a/b.c.d", "a=.b.c", "a.b.c=", "é.b.c", "a.b.\u00e9", "a.b.c\x00",
    "", ".", "a", "A" * 3000 + "." + "B" * 3000 + "." + "C" * 86,
])
def test_the_syntax_check_is_the_regular_expression_it_replaced(value: str) -> None:
    expected = bool(_JWS.match(value)) and not value.endswith("\n")  # `$` also matched before a final newline
    assert is_compact_jws(value) is expected


def test_json_decides_where_orjson_would_read_otherwise() -> None:
    claims = Compact(token(raw_claims=b'{"iss":"x","n":123456789012345678901234567890,"f":1.0}')).parse_claims()
    assert claims["n"] == 123456789012345678901234567890 and isinstance(claims["n"], int)
    assert claims["f"] == 1.0 and isinstance(claims["f"], float)
    plain = Compact(token()).parse_claims()
    assert plain == CLAIMS and type(plain["exp"]) is int
