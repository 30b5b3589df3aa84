"""Authentication of the admin listener: a bearer token from a configured admin provider (JWT, with a required
scope), a static admin token stored only as its SHA-256, and/or a verified client certificate.

```yaml
gateway:
  admin:
    auth:
      provider: corp                 # a JWT provider of `providers.jwt`; its tokens need `scope`
      scope: bastion:admin
      token_sha256: [9f86d0...]      # optional static tokens (hash only; `bastion keys new` style)
      client_certificates: ["CN=ops-admin,O=Example"]   # subjects or SANs of verified client certificates
      require_client_certificate: false   # true: a certificate AND a token (when tokens are configured)
      open_paths: [/healthz, /readyz]     # served without credentials (liveness probes)
```
The server verifies the client certificate (listener `client_ca`); this module only reads the verified DER.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bastion.config.admin import AdminAuthConfig
from bastion.config.secrets import hmac_jwks
from bastion.stages.base import SharedBase
from bastion.stages.identity.config import JwtProviderConfig
from bastion.stages.identity.jwks import JwksCache
from bastion.stages.identity.jwt import JwtVerifier, ProviderVerifier, TokenRejected
from bastion.stages.identity.mtls import CertParser


@dataclass(frozen=True, slots=True)
class AdminDecision:
    """allow, or deny with an HTTP status, a stable reason and the challenge header."""

    allow: bool
    status: int = 200
    reason: str = ""
    principal: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


_CHALLENGE = ("www-authenticate", 'Bearer realm="bastion-admin"')


class AdminAuth(SharedBase):
    """Checks admin requests. Build once per config load; `await start()` fetches a remote JWKS."""

    def __init__(self, config: AdminAuthConfig, providers: Iterable[JwtProviderConfig] = (), *,
                 wall_clock: Any = None) -> None:
        self.config = config
        self._hashes = tuple(bytes.fromhex(h) for h in config.token_sha256) + tuple(
            hashlib.sha256(ref.value().encode()).digest() for ref in config.tokens)  # compared as hashes too
        self._certs = frozenset(config.client_certificates)
        self._parser = CertParser(64)
        self._jwks: JwksCache | None = None
        self._verifier: JwtVerifier | None = None
        if config.provider is not None:
            provider = next((p for p in providers if p.name == config.provider), None)
            if provider is None:
                raise ValueError(f"gateway.admin.auth.provider: no JWT provider named {config.provider!r}")
            if provider.registered_keys is not None:  # a probe credential must never be an admin credential
                raise ValueError(f"gateway.admin.auth.provider: {config.provider!r} trusts registered probe keys")
            self._jwks = JwksCache(provider.name, provider.jwks_cache,
                                   jwks_uri=provider.jwks_uri,
                                   discovery_issuer=provider.issuer if provider.discovery else None,
                                   jwks_file=provider.jwks_file, jwks_bytes=hmac_jwks(provider.hmac_key))
            extra = {"wall_clock": wall_clock} if wall_clock is not None else {}
            self._verifier = JwtVerifier([ProviderVerifier(provider, self._jwks)], **extra)

    async def start(self) -> None:
        if self._jwks is not None:
            await self._jwks.start()

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    @property
    def uses_tokens(self) -> bool:
        return bool(self._hashes) or self._verifier is not None

    async def check(self, path: str, authorization: str | None, peer_cert: bytes | None) -> AdminDecision:
        """Decide one admin request from its path, Authorization header and verified client certificate."""
        if path.split("?", 1)[0] in self.config.open_paths:
            return AdminDecision(True, principal="anonymous")
        cert_principal = self._cert_principal(peer_cert)
        if self.config.require_client_certificate and cert_principal is None:
            return AdminDecision(False, 403, "admin_client_certificate_required")
        token = _bearer(authorization)
        if token is None:
            if cert_principal is not None and not (self.config.require_client_certificate and self.uses_tokens):
                return AdminDecision(True, principal=cert_principal)
            return AdminDecision(False, 401, "admin_credentials_missing", headers=(_CHALLENGE,))
        digest = hashlib.sha256(token.encode()).digest()
        if any(hmac.compare_digest(digest, h) for h in self._hashes):
            return AdminDecision(True, principal=f"static-token:{digest.hex()[:12]}")
        if self._verifier is None:
            return AdminDecision(False, 401, "admin_token_invalid",
                                 headers=(("www-authenticate", 'Bearer realm="bastion-admin", '
                                                               'error="invalid_token"'),))
        try:
            verified = await self._verifier.verify(token)
        except TokenRejected as exc:
            return AdminDecision(False, 401, f"admin_{exc.reason}",
                                 headers=(("www-authenticate", 'Bearer realm="bastion-admin", '
                                                               'error="invalid_token"'),))
        if self.config.scope not in verified.scopes:
            # RFC 6750 §3.1: a valid token without the needed scope is 403 insufficient_scope
            return AdminDecision(False, 403, "admin_scope_missing",
                                 headers=(("www-authenticate", f'Bearer realm="bastion-admin", '
                                                               f'error="insufficient_scope", '
                                                               f'scope="{self.config.scope}"'),))
        return AdminDecision(True, principal=f"{verified.provider}:{verified.subject}")

    def _cert_principal(self, der: bytes | None) -> str | None:
        if der is None or not self._certs:
            return None
        try:
            info = self._parser.parse(der)
        except ValueError:
            return None
        for name in (info.subject, *info.sans):
            if name in self._certs:
                return f"cert:{name}"
        return None


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        return None
    return value
