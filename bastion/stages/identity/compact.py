"""The compact JWS serialization (RFC 7515 §7.1) taken apart once: split, base64url-decoded, JSON-parsed.

joserfc's `extract_compact` does the same work through a general model (detached payloads, RFC 7797, a size
registry, `json.loads` on bytes with encoding detection), then the claims are parsed again apart. This module
does only what an access token needs, with the same rules, and every check stays where it was: the header
rules (`jose.check_header`), the algorithm pinned by the provider's config (never taken from the token), the
registered header types and the signature (`signature.SignatureCheck`, on prepared keys).

The rules, each as joserfc applies them (tests/stages/identity/test_compact.py checks them against joserfc):
- base64url without padding, `+`, `/` or `=`; a length of 4n+1 is refused, and so is a last character with
  bits set past the end of the data (non-canonical encodings, RFC 4648 §3.5);
- header at most 2 KiB and signature at most 1 KiB of base64url; the whole token is capped by the caller;
- the header is a JSON object with an `alg` member; `b64` (RFC 7797) other than `true` is refused unless `crit`
  lists it (and then `jose.check_header` refuses the token: the extension is not implemented);
- JSON as Python's `json` parses it (the lexically last of duplicate members wins, which RFC 7515 §5.2 and
  RFC 7519 §4 allow), from strict UTF-8. orjson reads it first (a few times faster than `json`, which was most
  of a new token's parsing cost): its result is used only where it is the one `json` gives (no float anywhere,
  as orjson reads an integer past 64 bits as a float, and no nesting past `_ORJSON_DEPTH`); anything else, and
  anything orjson refuses, is parsed again by `json`, which decides. Stricter than before: a byte-order mark,
  UTF-16/32 text, encoded surrogates and nesting deeper than the parser's recursion limit are refused as
  malformed (joserfc's `json.loads` on bytes detected the first three, and the last one raised out of the stage).
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import orjson

MAX_HEADER = 2048  # base64url characters of the protected header
MAX_SIGNATURE = 1024  # base64url characters of the signature (joserfc's `max_signature_length`)
# on bytes: a table lookup a byte (str.translate looks each character up in a dict)
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# the characters that may end a segment of 4n+2 / 4n+3 characters: the unused low bits must be zero
_CANONICAL_END = ("AEIMQUYcgkosw048", "AQgw")


# RFC 7515 §2 base64url alphabet, and the segment separator
_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_JWS_CHARS = _B64URL + b"."
_ORJSON_DEPTH = 32  # deeper results are parsed again by `json` (whose recursion limit decides, as before)


def is_compact_jws(token: str) -> bool:
    """RFC 7515 §7.1: three dot-separated segments of the base64url alphabet, the first two non-empty (JWE's
    five segments fail too). One pass in C over the bytes, not a regular expression's step per character."""
    if not token.isascii():
        return False
    raw = token.encode("ascii")
    if raw.translate(None, _JWS_CHARS):  # a character outside the alphabet and "."
        return False
    first = raw.find(b".")
    second = raw.find(b".", first + 1)
    return first > 0 and second > first + 1 and raw.find(b".", second + 1) < 0


def _as_json_reads(value: object, depth: int) -> bool:
    """Whether orjson's `value` is what `json.loads` reads from the same text: no float anywhere (`json` keeps
    an integer of any size exact, orjson reads one past 64 bits as a float) and nesting of at most
    `_ORJSON_DEPTH`. Floats in claims are rare, so the fallback costs nothing in practice."""
    if isinstance(value, dict):
        if depth >= _ORJSON_DEPTH:
            return False
        return all(_as_json_reads(item, depth + 1) for item in value.values())
    if isinstance(value, list):
        if depth >= _ORJSON_DEPTH:
            return False
        return all(_as_json_reads(item, depth + 1) for item in value)
    return not isinstance(value, float)


class Malformed(ValueError):
    """The token is not a well-formed compact JWS; the message says why (for the audit event only)."""


def b64decode(segment: str) -> bytes:
    """Strict base64url (RFC 7515 §2, no padding). Raises ValueError."""
    if "+" in segment or "/" in segment or "=" in segment:
        raise ValueError("not base64url")
    return _standard_decode(segment.encode("ascii").translate(_TO_STANDARD), segment)


def _standard_decode(standard: bytes, segment: str) -> bytes:
    """`segment` (base64url without `+`, `/` or `=`) decoded from `standard`, its bytes already translated to the
    standard alphabet. Raises ValueError."""
    pad = -len(segment) % 4
    if pad == 3:
        raise ValueError("base64url length of 4n+1")
    if pad and segment[-1] not in _CANONICAL_END[pad - 1]:
        raise ValueError("non-canonical base64url")
    return binascii.a2b_base64(standard + b"=" * pad if pad else standard, strict_mode=True)


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from strict UTF-8 bytes. Raises Malformed."""
    try:
        fast = orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # `json` decides, with its own reason
    else:
        if isinstance(fast, dict) and _as_json_reads(fast, 0):
            return fast
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Malformed(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not a JSON object")
    return value


class Compact:
    """A compact JWS split and decoded: the segments as sent, the header, and the claims when the payload is
    base64url JSON (`claims` is None for an RFC 7797 unencoded payload, which `jose.check_header` refuses)."""

    __slots__ = ("_standard", "claims", "header", "payload", "segments", "signature", "signing_input")

    def __init__(self, token: str) -> None:
        """`token` must already match the compact syntax (three dot-separated base64url alphabet segments)."""
        head, body, signature = token.split(".")
        if len(head) > MAX_HEADER:
            raise Malformed(f"header of {len(head)} characters (at most {MAX_HEADER})")
        if len(signature) > MAX_SIGNATURE:
            raise Malformed(f"signature of {len(signature)} characters (at most {MAX_SIGNATURE})")
        # the standard alphabet and padding are not base64url (searched in the str: `b"+" in raw` would first try
        # the needle as an integer and format a TypeError)
        if "+" in token or "/" in token or "=" in token or not token.isascii():
            raise Malformed("not base64url")
        raw = token.encode("ascii")
        # one encode and one translation for the three segments, each decoded from its slice
        standard = raw.translate(_TO_STANDARD)
        signed = len(head) + 1 + len(body)
        try:
            header = json_object(_standard_decode(standard[:len(head)], head), "header")
        except Malformed:
            raise
        except ValueError as exc:
            raise Malformed(f"header: {exc}") from exc
        if "alg" not in header:
            raise Malformed("header has no alg")
        self.header = header
        self.segments = (head, body, signature)
        self.signature = signature
        self._standard = standard[signed + 1:]  # the signature's, decoded by `signature_bytes`
        self.signing_input = raw[:signed]  # RFC 7515 §5.2 step 8
        b64 = header.get("b64", True)
        if b64 is not True:  # RFC 7797 §6: only with `crit: ["b64"]`
            crit = header.get("crit")
            if not isinstance(crit, list) or "b64" not in crit:
                raise Malformed("b64 header parameter not listed in crit")
            self.payload = body.encode("ascii")
            self.claims: dict[str, Any] | None = None
            return
        try:
            self.payload = _standard_decode(standard[len(head) + 1:signed], body)
        except ValueError as exc:
            raise Malformed(f"payload: {exc}") from exc
        self.claims = None  # parsed by `parse_claims`, once the header rules passed (the order joserfc had)

    def signature_bytes(self) -> bytes:
        """The signature segment decoded (`b64decode(self.signature)`, without a second translation). Raises
        ValueError."""
        return _standard_decode(self._standard, self.signature)

    def parse_claims(self) -> dict[str, Any]:
        """The payload as a JSON object (RFC 7519 §7.2 step 10). Raises Malformed."""
        claims = json_object(self.payload, "payload")
        self.claims = claims
        return claims
