"""Verification of JWT access tokens (RFC 7519, RFC 8725 BCP, RFC 9068 profile).

The unverified payload is read for one thing only: its `iss`, to pick the provider. Everything used after that
is checked: the algorithm against the provider's allowlist and the key's type, the signature, the header
parameters, and every time and audience claim against an injected clock. The token is taken apart once
(`compact.Compact`); signatures are checked on prepared keys (`signature.SignatureCheck`, joserfc for the
algorithm families it does not prepare).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from joserfc.jws import JWSRegistry

from bastion.cache import BoundedCache
from bastion.stages.identity.compact import Compact, Malformed, is_compact_jws
from bastion.stages.identity.config import JwtProviderConfig
from bastion.stages.identity.jose import FORBIDDEN_HEADERS, HeaderFault, check_header, check_typ, normalize_typ
from bastion.stages.identity.jwks import JwksCache, JwksUnavailable
from bastion.stages.identity.registered import RegisteredKeys
from bastion.stages.identity.signature import SignatureCheck


class TokenRejected(Exception):
    """A credential failed a check. `reason` is the stable code; `log_detail` is for the audit event only."""

    def __init__(self, reason: str, log_detail: str = "", status: int = 401, rule: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_detail = log_detail or reason
        self.status = status
        self.rule = rule  # the JOSE header rule that refused the token (`jose.HeaderFault.rule`), if one did


class VerifiedToken:
    """A token whose signature and claims were verified; read-only once made (never written after `__init__`).

    A plain slotted class, not a frozen dataclass: a frozen dataclass's `__init__` sets each of its 13 fields
    through `object.__setattr__`, even compiled (~20 K instructions, once per new token).
    """

    __slots__ = ("claims", "client_id", "cnf_x5t", "expires", "headers", "issued_at", "issuer", "jti", "method",
                 "provider", "roles", "scopes", "subject")

    def __init__(self, provider: str, issuer: str, claims: dict[str, Any], subject: str | None,
                 scopes: frozenset[str], roles: frozenset[str], expires: float, jti: str | None,
                 issued_at: float | None, client_id: str | None, cnf_x5t: str | None = None,
                 headers: tuple[tuple[str, str], ...] = (), method: str = "jwt") -> None:
        self.provider = provider
        self.issuer = issuer
        self.claims = claims
        self.subject = subject
        self.scopes = scopes
        self.roles = roles
        self.expires = expires  # cached by token hash until then
        self.jti = jti
        self.issued_at = issued_at
        self.client_id = client_id
        self.cnf_x5t = cnf_x5t
        self.headers = headers  # claim_to_headers, rendered once
        self.method = method

    def until(self, expires: float) -> VerifiedToken:
        """The same token, trusted no later than `expires`."""
        return VerifiedToken(self.provider, self.issuer, self.claims, self.subject, self.scopes, self.roles,
                             min(self.expires, expires), self.jti, self.issued_at, self.client_id, self.cnf_x5t,
                             self.headers, self.method)


_NO_NAMES: frozenset[str] = frozenset()
# A refused JOSE header (jose.check_header / check_typ) -> the public reason code of an access token.
_HEADER_REASONS = {"alg_missing": "jwt_alg_not_allowed", "alg_none": "jwt_alg_not_allowed",
                   "crit": "jwt_crit_unsupported", "b64": "jwt_crit_unsupported",
                   **dict.fromkeys(FORBIDDEN_HEADERS, "jwt_header_not_allowed"),
                   "kid": "jwt_malformed", "typ": "jwt_bad_typ", "typ_missing": "jwt_bad_typ"}


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected("jwt_malformed", f"claim {name} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer past the float range (JSON allows any number of digits)
        raise TokenRejected("jwt_malformed", f"claim {name} is out of range") from None
    if not math.isfinite(number):  # NaN would pass every comparison below (an exp of NaN never expires)
        raise TokenRejected("jwt_malformed", f"claim {name} is not a finite number")
    return number


def _rejected(fault: HeaderFault) -> TokenRejected:
    return TokenRejected(_HEADER_REASONS[fault.rule], fault.detail, rule=fault.rule)


def string_set(value: Any, *, split: bool) -> frozenset[str]:
    """A space-separated string (RFC 8693 `scope`) or a list of strings -> a set; anything else -> empty."""
    if isinstance(value, str):
        return frozenset(value.split()) if split else frozenset((value,))
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class NameSets:
    """The set of names (scopes or roles) a claim value carries, made once per distinct value and shared.

    Most tokens of a deployment carry one of a few scope strings and role lists, and a verified token's sets stay
    in the token cache with it: one shared frozenset per value, instead of one per token, is fewer objects for the
    cyclic collector to walk (a set is always tracked) and no split or set to build for a value seen before. The
    table is bounded (a signed token can carry any value); a value that is neither a string nor a list of strings
    is read by `string_set` each time.
    """

    __slots__ = ("_made", "_split")

    def __init__(self, *, split: bool, max_entries: int = 1024) -> None:
        self._split = split
        self._made: BoundedCache[str | tuple[str, ...], frozenset[str]] = BoundedCache(max_entries)

    def of(self, value: Any) -> frozenset[str]:
        """`string_set(value, split=...)`, the same set object for the same value."""
        key: str | tuple[str, ...]
        if isinstance(value, str):
            key = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            key = tuple(value)  # never equal to a string key
        else:
            return string_set(value, split=self._split)
        made = self._made.get(key, 0.0)
        if made is None:
            made = string_set(value, split=self._split)
            self._made.put(key, made, 0.0)
        return made


def header_value(value: Any) -> str | None:
    """A claim rendered for an upstream header, or None if it cannot be sent safely."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ",".join(value)
    elif isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or len(text) > 4096:
        return None
    return text


class ProviderVerifier:
    """The checks of one JWT provider, prepared once per config load."""

    def __init__(self, config: JwtProviderConfig, jwks: JwksCache | RegisteredKeys) -> None:
        self.config = config
        self.jwks = jwks
        self.registry = JWSRegistry(algorithms=list(config.algorithms), strict_check_header=False)
        self._signature = SignatureCheck(self.registry)  # keys prepared once, not per token
        self._typ = frozenset(normalize_typ(t) for t in config.typ)
        self._audiences = frozenset(config.audiences)
        self._required = tuple(config.required_claims)
        self._scopes = NameSets(split=True)  # RFC 8693 §4.2: a space-separated string
        self._roles = NameSets(split=False)

    async def verify(self, token: str, jws: Compact, header: dict[str, Any],
                     claims: dict[str, Any], now: float) -> VerifiedToken:
        cfg = self.config
        if len(token) > cfg.max_token_bytes:
            raise TokenRejected("jwt_too_large", f"token of {len(token)} bytes for provider {cfg.name}")
        alg = header["alg"]
        if alg not in cfg.algorithms:
            raise TokenRejected("jwt_alg_not_allowed", f"alg {alg!r} not allowed by provider {cfg.name}")
        fault = check_typ(header, self._typ, allow_missing=cfg.allow_missing_typ)
        if fault is not None:
            raise _rejected(fault)
        kid = header.get("kid")  # a string of 1 to MAX_KID characters, or absent (jose.check_header)
        until = math.inf  # when the key's trust ends: never for a provider's JWKS, the registration's end otherwise
        try:
            if isinstance(self.jwks, RegisteredKeys):
                keys, until = await self.jwks.keys_until(kid, alg)
            else:
                keys = await self.jwks.keys_for(kid, alg)
        except JwksUnavailable as exc:
            raise TokenRejected("jwks_unavailable", str(exc), status=503) from exc
        if not keys:
            raise TokenRejected("jwt_unknown_kid", f"no {alg} key with kid {kid!r} for provider {cfg.name}")
        check = self._signature
        if not check.header_ok(header) or not any(check.verify(jws, key, alg) for key in keys):
            raise TokenRejected("jwt_bad_signature", f"signature does not verify (kid {kid!r})")
        verified = self._claims(claims, now)
        # a registered key's token is cached no longer than the registration: after it, the key is looked up again
        return verified if verified.expires <= until else verified.until(until)

    def _claims(self, claims: dict[str, Any], now: float) -> VerifiedToken:
        cfg = self.config
        leeway = cfg.leeway
        exp = _number(claims, "exp")
        if exp is None:
            raise TokenRejected("jwt_missing_claim", "claim exp is missing")  # RFC 9068 §2.2
        if now >= exp + leeway:
            raise TokenRejected("jwt_expired", f"expired at {exp:.0f}, now {now:.0f}")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + leeway:
            raise TokenRejected("jwt_not_yet_valid", f"nbf {nbf:.0f} is in the future (now {now:.0f})")
        iat = _number(claims, "iat")
        if iat is not None and iat > now + leeway:
            raise TokenRejected("jwt_not_yet_valid", f"iat {iat:.0f} is in the future (now {now:.0f})")
        aud = claims.get("aud")
        if not string_set(aud, split=False) & self._audiences:  # RFC 8725 §3.9
            raise TokenRejected("jwt_bad_audience", f"aud {aud!r} does not name this gateway")
        for name in self._required:
            if claims.get(name) is None:
                raise TokenRejected("jwt_missing_claim", f"claim {name} is missing")
        if exp - (iat if iat is not None else now) > cfg.max_lifetime:
            raise TokenRejected("jwt_lifetime_too_long", f"lifetime exceeds {cfg.max_lifetime:.0f}s")
        sub = claims.get("sub")
        jti = claims.get("jti")
        if (sub is not None and not isinstance(sub, str)) or (jti is not None and not isinstance(jti, str)):
            raise TokenRejected("jwt_malformed", "sub or jti is not a string")
        client = claims.get(cfg.consumer_claim, claims.get("azp"))
        cnf = claims.get("cnf")
        x5t = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if cnf is not None and not isinstance(x5t, str):
            raise TokenRejected("jwt_malformed", "cnf claim without a usable x5t#S256")
        headers = []
        for item in cfg.claim_to_headers:
            value = header_value(claims.get(item.claim))
            if value is not None:
                headers.append((item.header, value))
        return VerifiedToken(
            provider=cfg.name, issuer=cfg.issuer, claims=claims, subject=sub,
            scopes=self._scopes.of(claims.get(cfg.scope_claim)),
            roles=self._roles.of(claims.get(cfg.roles_claim)) if cfg.roles_claim else _NO_NAMES,
            expires=exp, jti=jti, issued_at=iat,
            client_id=client if isinstance(client, str) else None, cnf_x5t=x5t, headers=tuple(headers),
        )


class JwtVerifier:
    """Picks the provider by exact `iss` and runs its checks."""

    def __init__(self, providers: Iterable[ProviderVerifier],
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.by_issuer = {p.config.issuer: p for p in providers}
        self._clock = wall_clock
        self.max_bytes = max((p.config.max_token_bytes for p in self.by_issuer.values()), default=8192)

    async def verify(self, token: str) -> VerifiedToken:
        """Verify `token` or raise TokenRejected with the reason."""
        if len(token) > self.max_bytes:
            raise TokenRejected("jwt_too_large", f"token of {len(token)} bytes")
        if token.count(".") == 4:
            raise TokenRejected("jwe_unsupported", "encrypted (JWE) tokens are not accepted")
        if not is_compact_jws(token):  # RFC 7515 §7.1; JWE compact (RFC 7516 §7.1) has five segments
            raise TokenRejected("jwt_malformed", "not a compact JWS")
        try:
            parsed = Compact(token)
        except Malformed as exc:
            raise TokenRejected("jwt_malformed", f"cannot decode token: {exc}") from exc
        header = parsed.header
        self._check_header(header)
        try:
            claims = parsed.parse_claims()
        except Malformed as exc:
            raise TokenRejected("jwt_malformed", str(exc)) from exc
        iss = claims.get("iss")
        provider = self.by_issuer.get(iss) if isinstance(iss, str) else None
        if provider is None:  # RFC 8725 §3.8: exact issuer match, no normalisation
            raise TokenRejected("jwt_bad_issuer", f"no provider for issuer {str(iss)[:200]!r}")
        return await provider.verify(token, parsed, header, claims, self._clock())

    @staticmethod
    def _check_header(header: dict[str, Any]) -> None:
        fault = check_header(header)  # alg none, crit/b64, key-locating headers, kid (RFC 8725 §3.1, §3.10)
        if fault is not None:
            raise _rejected(fault)
