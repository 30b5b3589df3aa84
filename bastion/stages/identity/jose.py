"""JOSE header hardening, written once for every signed token Bastion verifies: JWT access tokens (`jwt.py`)
and Security Event Tokens (`ssf.py`).

Each check returns a `HeaderFault` whose `rule` names the one rule that refused the header, so a test row (and
an audit event) can tell which rule fired. The callers map a fault to their own public codes: `jwt_*` reasons
for access tokens, RFC 8935 error codes for SETs. All of this runs before any key is looked up.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

# RFC 8725 §3.10: keys are never located through the token itself.
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c")
# RFC 7515 §4.1.11 `crit` and RFC 7797 `b64`: extensions we do not implement, so we must refuse them.
EXTENSION_HEADERS = ("crit", "b64")
MAX_KID = 256


@dataclass(frozen=True, slots=True)
class HeaderFault:
    """A refused JOSE header. `rule` is stable and unique to the check (`alg_none`, `jku`, `typ`, ...);
    `detail` is a sentence for the operator that names header parameters, never their values' secrets."""

    rule: str
    detail: str


def normalize_typ(value: str) -> str:
    """RFC 7515 §4.1.9: `application/` may be omitted, and media types compare case-insensitively."""
    lowered = value.lower()
    return lowered[len("application/"):] if lowered.startswith("application/") else lowered


def check_header(header: dict[str, Any]) -> HeaderFault | None:
    """The rules every Bastion JWS header obeys, whatever the token is for; None when it passes."""
    alg = header.get("alg")
    if not isinstance(alg, str):
        return HeaderFault("alg_missing", "the header has no alg string")
    if alg.lower() == "none":  # RFC 8725 §3.1: an unsecured JWS is never accepted, in any spelling
        return HeaderFault("alg_none", "alg none")
    for name in EXTENSION_HEADERS:
        if name in header:
            return HeaderFault(name, f"header parameter {name} (an extension we do not implement)")
    for name in FORBIDDEN_HEADERS:
        if name in header:
            return HeaderFault(name, f"header parameter {name} is never used to find a key")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID):
        return HeaderFault("kid", f"kid is not a string of 1 to {MAX_KID} characters")
    return None


def check_typ(header: dict[str, Any], accepted: Collection[str], *, allow_missing: bool = False) -> HeaderFault | None:
    """Explicit typing (RFC 8725 §3.11): `typ` must be one of `accepted` (normalised), so that a token made for
    one purpose is never taken for another. `allow_missing` lets a provider that omits `typ` through."""
    typ = header.get("typ")
    if typ is None:
        return None if allow_missing else HeaderFault("typ_missing", "the header has no typ")
    if not isinstance(typ, str) or normalize_typ(typ) not in accepted:
        return HeaderFault("typ", f"typ {str(typ)[:64]!r} is not accepted here")
    return None
