"""Probe identities and the hostile tokens the probe sends.

The operator gives the probe a key pair: the probe signs with the private key, and the gateway trusts the public
half through a JWT provider in `bastion.yaml` (a `jwks_file`). Valid probe tokens let the probe get past
identity to test authorisation and input controls; every forged token is built from the same issuer and
audience, so a refusal proves the check under test and not an unrelated mismatch.

```yaml
# bastion.yaml: the provider that trusts the probe (keep it in every environment you probe)
providers:
  jwt:
    - {name: bastion-probe, issuer: "urn:bastion:probe", audiences: [api://orders], algorithms: [ES256],
       jwks_file: probe-jwks.json}
```
`bastion probe --probe-provider bastion-probe --probe-key probe-key.jwk ...` then signs with the private JWK.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, Key, KeySet, RSAKey
from pydantic import Field

from bastion.config.base import Model
from bastion.posture.credential import RegisteredCredential
from bastion.stages.identity.config import JwtProviderConfig

PROBE_SUBJECT = "bastion-probe"


class ProbeIdentityConfig(Model):
    """Who the probe is: the provider that trusts its key, and the private key itself.

    `{provider: bastion-probe, key: probe-key.jwk, subject: bastion-probe}`
    """

    provider: str = Field(description="Name of the JWT provider in bastion.yaml whose jwks_file holds the "
                                      "probe's public key.")
    key: Path = Field(description="The probe's private JWK (JSON), made by `bastion probe --new-key DIR`.")
    subject: str = Field(PROBE_SUBJECT, description="`sub` of probe tokens (map it to a consumer if a class "
                                                    "requires known consumers).")
    client_id: str = Field(PROBE_SUBJECT, description="`client_id` of probe tokens.")


def new_probe_key(directory: Path, kid: str | None = None) -> tuple[Path, Path]:
    """Write a fresh ES256 key pair: `probe-key.jwk` (private, mode 0600) and `probe-jwks.json` (public)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ECKey.generate_key("P-256", parameters={"kid": kid or f"probe-{secrets.token_hex(4)}",
                                                   "alg": "ES256", "use": "sig"})
    private = directory / "probe-key.jwk"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(key.as_dict(private=True), f)
    public = directory / "probe-jwks.json"
    public.write_text(json.dumps({"keys": [key.as_dict(private=False)]}, indent=2))
    return private, public


def load_key(path: Path) -> ECKey | RSAKey:
    data = json.loads(path.read_text())
    if data.get("kty") == "EC":
        return ECKey.import_key(data)
    if data.get("kty") == "RSA":
        return RSAKey.import_key(data)
    raise ValueError(f"{path}: the probe key must be an EC or RSA private JWK")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"


def _alg(key: Key) -> str:
    alg = key.alg if isinstance(key.alg, str) else None
    if alg:
        return alg
    return "ES256" if isinstance(key, ECKey) else "RS256"


class TokenForge:
    """Valid and forged access tokens for one issuer and audience.

    `key` is the probe's private key (None: only forgeries that need no trusted key can be made);
    `public_keys` are the keys the gateway trusts for this issuer (for the HS256 key-confusion attack).
    """

    def __init__(self, issuer: str, audience: str, key: ECKey | RSAKey | None,
                 public_keys: list[ECKey | RSAKey] | None = None, *,
                 subject: str = PROBE_SUBJECT, client_id: str = PROBE_SUBJECT, clock: Any = time.time) -> None:
        self.issuer = issuer
        self.audience = audience
        self.key = key
        self.public_keys = public_keys or ([key] if key is not None else [])
        self.subject = subject
        self.client_id = client_id
        self.clock = clock

    @property
    def trusted(self) -> bool:
        """Whether this forge can make tokens the gateway accepts."""
        return self.key is not None

    def claims(self, scopes: list[str] | tuple[str, ...] = (), **over: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": self.subject, "aud": self.audience, "iat": now,
                                  "exp": now + 300, "jti": secrets.token_hex(12), "client_id": self.client_id,
                                  "scope": " ".join(scopes)}
        claims.update(over)
        return {k: v for k, v in claims.items() if v is not None}

    def _sign(self, key: Key, claims: dict[str, Any]) -> str:
        alg = _alg(key)
        header = {"alg": alg, "typ": "at+jwt", **({"kid": key.kid} if key.kid else {})}
        return jwt.encode(header, claims, key, algorithms=[alg])

    def valid(self, scopes: list[str] | tuple[str, ...] = (), **over: Any) -> str:
        if self.key is None:
            raise ValueError("no probe key: valid tokens need --probe-key and --probe-provider")
        return self._sign(self.key, self.claims(scopes, **over))

    # ---- forgeries ------------------------------------------------------------------------------------------

    def alg_none(self, scopes: list[str] | tuple[str, ...] = ()) -> str:
        """RFC 8725 §2.1: an unsigned token must never be accepted."""
        return _unsigned({"alg": "none", "typ": "at+jwt"}, self.claims(scopes)) + "."

    def foreign_key(self, scopes: list[str] | tuple[str, ...] = ()) -> str:
        """Signed by a fresh key the JWKS does not hold, under the trusted key's kid."""
        kid = (self.public_keys[0].kid if self.public_keys else None) or "probe"
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256"})
        return self._sign(key, self.claims(scopes))

    def hs256_public_key(self, scopes: list[str] | tuple[str, ...] = ()) -> str:
        """RFC 8725 §2.1 key confusion: HS256 with the issuer's public key (PEM) as the HMAC secret."""
        public = self.public_keys[0] if self.public_keys else ECKey.generate_key("P-256")
        secret = public.as_pem(private=False) if isinstance(public, ECKey | RSAKey) else b""
        header = {"alg": "HS256", "typ": "at+jwt", **({"kid": public.kid} if public.kid else {})}
        signing_input = _unsigned(header, self.claims(scopes))
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    def expired(self, scopes: list[str] | tuple[str, ...] = ()) -> str:
        now = int(self.clock())
        return self.valid(scopes, iat=now - 7200, exp=now - 3600)

    def not_yet_valid(self, scopes: list[str] | tuple[str, ...] = ()) -> str:
        now = int(self.clock())
        return self.valid(scopes, nbf=now + 3600, exp=now + 7200)

    def wrong_issuer(self, scopes: list[str] | tuple[str, ...] = ()) -> str:
        return self.valid(scopes, iss="https://attacker.invalid")

    def wrong_audience(self, scopes: list[str] | tuple[str, ...] = ()) -> str:
        return self.valid(scopes, aud="api://not-this-gateway")


PROBE_ISSUER = "urn:bastion:probe"


def discover_identity(providers: list[JwtProviderConfig], base_dir: Path) -> ProbeIdentityConfig | None:
    """The probe identity a config already trusts: a provider with the probe issuer whose `jwks_file` has the
    private `probe-key.jwk` beside it (as `bastion probe --new-key DIR` and `bastion demo` write them)."""
    for provider in providers:
        if provider.issuer != PROBE_ISSUER or provider.jwks_file is None:
            continue
        jwks = provider.jwks_file if provider.jwks_file.is_absolute() else base_dir / provider.jwks_file
        key = jwks.parent / "probe-key.jwk"
        if key.is_file():
            return ProbeIdentityConfig(provider=provider.name, key=key.resolve())
    return None


def forge_for(providers: list[JwtProviderConfig], identity: ProbeIdentityConfig | None,
              base_dir: Path) -> TokenForge | None:
    """The forge for the probe's provider, or an untrusted one for the first JWT provider (forgeries only)."""
    if identity is not None:
        provider = next((p for p in providers if p.name == identity.provider), None)
        if provider is None:
            raise ValueError(f"no JWT provider named {identity.provider!r} in the config")
        key_path = identity.key if identity.key.is_absolute() else Path.cwd() / identity.key
        key = load_key(key_path)
        return TokenForge(provider.issuer, provider.audiences[0], key, _public_keys(provider, base_dir) or [key],
                          subject=identity.subject, client_id=identity.client_id)
    if not providers:
        return None
    provider = providers[0]
    return TokenForge(provider.issuer, provider.audiences[0], None, _public_keys(provider, base_dir))


def credential_forge(providers: list[JwtProviderConfig], credential: RegisteredCredential) -> TokenForge:
    """The forge for a key registered at the admin API (`credential.RegisteredCredential`)."""
    provider = next((p for p in providers if p.name == credential.provider), None)
    if provider is None:
        raise ValueError(f"no JWT provider named {credential.provider!r} in the config")
    return TokenForge(provider.issuer, provider.audiences[0], credential.key, [credential.key])


def _public_keys(provider: JwtProviderConfig, base_dir: Path) -> list[ECKey | RSAKey]:
    """The provider's public keys, read from its jwks_file or fetched from its JWKS URL (best effort)."""
    try:
        if provider.jwks_file is not None:
            path = provider.jwks_file if provider.jwks_file.is_absolute() else base_dir / provider.jwks_file
            doc = json.loads(path.read_text())
        else:
            doc = _fetch_jwks(provider)
        keys = KeySet.import_key_set(doc).keys
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [k for k in keys if isinstance(k, ECKey | RSAKey)]


def _fetch_jwks(provider: JwtProviderConfig) -> dict[str, Any]:
    import urllib.request

    url = provider.jwks_uri
    if url is None:
        with urllib.request.urlopen(provider.issuer.rstrip("/") + "/.well-known/openid-configuration",
                                    timeout=5) as response:
            url = json.loads(response.read(512 * 1024))["jwks_uri"]
    with urllib.request.urlopen(str(url), timeout=5) as response:
        doc: dict[str, Any] = json.loads(response.read(512 * 1024))
        return doc
