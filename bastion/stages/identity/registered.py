"""Keys registered at runtime through the admin API, each trusted for a short time: the probe's credential.

`bastion probe` makes a P-256 key pair in memory and registers the public half with
`POST /probe/credentials` (admin auth, audited); the gateway trusts it for the provider that has
`registered_keys:` until the registration expires, with no action from anyone. The private key never leaves the
probe and nothing is written to disk.

The registration lives in the state backend (`block(kind, key, until)`), so every worker and instance sharing it
sees the same keys, and it expires there by itself (Redis `PX`, the memory backend's sweep). The `kid` of a
registered key *is* its public key (`reg-p256.<x>.<y>`, the RFC 7518 §6.2.1 coordinates): a lookup is one
state read, and the key a token names is trusted only if that exact key is registered and not yet expired.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key

from bastion.stages.identity.config import RegisteredKeysConfig
from bastion.stages.identity.jwks import JwksUnavailable
from bastion.state import StateBackend, StateUnavailable

KID_PREFIX = "reg-p256."
STATE_KIND = "probe-key"
_COORDINATE = 43  # RFC 7518 §6.2.1.2: a P-256 coordinate is 32 bytes, 43 base64url characters unpadded


@dataclass(frozen=True, slots=True)
class Registration:
    """One registered key: the provider that trusts it, its kid, and the wall time its trust ends."""

    provider: str
    kid: str
    expires: float


def kid_for(key: ECKey) -> str:
    """The kid of a P-256 public key: its coordinates, so the kid names exactly one key."""
    public = key.as_dict(private=False)
    return f"{KID_PREFIX}{public['x']}.{public['y']}"


def key_from_kid(kid: str) -> ECKey | None:
    """The P-256 public key a registered kid spells, or None when the kid is not one (or not on the curve)."""
    if not kid.startswith(KID_PREFIX):
        return None
    x, _, y = kid[len(KID_PREFIX):].partition(".")
    if len(x) != _COORDINATE or len(y) != _COORDINATE:
        return None
    try:
        base64.urlsafe_b64decode(x + "=")
        base64.urlsafe_b64decode(y + "=")
        return ECKey.import_key({"kty": "EC", "crv": "P-256", "x": x, "y": y, "alg": "ES256", "kid": kid})
    except (ValueError, JoseError):  # not base64url, or not a point on P-256
        return None


def public_key(doc: Any) -> ECKey:
    """The public P-256 JWK an admin call registers (ValueError otherwise: wrong type, curve, or a private key)."""
    if not isinstance(doc, dict) or doc.get("kty") != "EC" or doc.get("crv") != "P-256":
        raise ValueError("public_jwk must be an EC P-256 JWK")
    if "d" in doc:  # the private half must never travel: the probe keeps it
        raise ValueError("public_jwk holds a private key: send the public half only")
    key = key_from_kid(f"{KID_PREFIX}{doc.get('x')}.{doc.get('y')}")
    if key is None:
        raise ValueError("public_jwk is not a P-256 public key")
    return key


class RegisteredKeys:
    """The key source of a provider with `registered_keys:`, with the surface of `JwksCache`."""

    remote = False
    fetch_count = 0

    def __init__(self, provider: str, config: RegisteredKeysConfig, state: StateBackend) -> None:
        self.provider = provider
        self.config = config
        self._state = state

    def _state_key(self, kid: str) -> str:
        return f"{self.provider}:{kid}"

    async def register(self, key: ECKey, ttl: float, now: float) -> Registration:
        """Trust `key` for `ttl` seconds from `now` (at most `max_ttl`). Raises ValueError, StateUnavailable."""
        if not 0 < ttl <= self.config.max_ttl:  # NaN fails this too
            raise ValueError(f"ttl_seconds must be more than 0 and at most {self.config.max_ttl:.0f}")
        kid = kid_for(key)
        await self._state.block(STATE_KIND, self._state_key(kid), now + ttl)
        return Registration(self.provider, kid, now + ttl)

    async def keys_until(self, kid: str | None, alg: str) -> tuple[list[Key], float]:
        """The key a token's kid names, if registered now, and when its registration ends."""
        key = key_from_kid(kid) if kid is not None and alg == "ES256" else None
        if key is None:
            return [], 0.0
        try:
            until = await self._state.is_blocked(STATE_KIND, self._state_key(kid or ""))
        except StateUnavailable as exc:
            raise JwksUnavailable(f"provider {self.provider}: the state backend holding registered keys "
                                  "is unavailable") from exc
        return ([key], until) if until is not None else ([], 0.0)

    async def keys_for(self, kid: str | None, alg: str) -> list[Key]:
        keys, _ = await self.keys_until(kid, alg)
        return keys

    async def start(self) -> None:
        """Nothing to fetch: keys arrive through the admin API."""

    async def close(self) -> None:
        """Registrations stay in the state backend until they expire; nothing to release here."""

    def snapshot(self) -> dict[str, Any]:
        return {"provider": self.provider, "ready": True, "fetches": 0}
