"""Opaque access tokens: OAuth 2.0 Token Introspection (RFC 7662).

Only `"active": true` from the endpoint makes a token valid; any error is a refusal (fail closed). Answers are
cached by token hash for at most `cache_ttl` and never past the token's `exp`.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from bastion.http.fetch import FetchError, HttpResponse, fetch
from bastion.stages.base import Services
from bastion.stages.identity.config import IntrospectionProviderConfig
from bastion.stages.identity.jwt import TokenRejected, VerifiedToken, header_value, string_set
from bastion.stages.identity.tokencache import TokenCache, token_key


class _Endpoint:
    def __init__(self, config: IntrospectionProviderConfig, secret: str) -> None:
        self.config = config
        # RFC 6749 §2.3.1: client id and secret are form-encoded before Basic encoding
        raw = f"{quote(config.client_id, safe='')}:{quote(secret, safe='')}".encode()
        self.authorization = "Basic " + base64.b64encode(raw).decode("ascii")
        self.cache: TokenCache[VerifiedToken] = TokenCache(10_000, config.cache_ttl)


class Introspector:
    """Asks each configured introspection endpoint, in order, until one says the token is active."""

    def __init__(self, providers: list[IntrospectionProviderConfig], services: Services | None = None, *,
                 fetcher: Callable[..., Any] = fetch, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._endpoints = []
        for provider in providers:
            if provider.client_secret is not None:  # loaded with the config
                self._endpoints.append(_Endpoint(provider, provider.client_secret.value()))
                continue
            secret = env.get(provider.client_secret_env or "")
            if not secret:
                raise ValueError(f"providers: {provider.name}: environment variable "
                                 f"{provider.client_secret_env} (client secret) is not set")
            self._endpoints.append(_Endpoint(provider, secret))
        self._clock = services.wall_clock if services else time.time
        self._fetch = fetcher
        self.calls = 0

    async def verify(self, token: str) -> VerifiedToken:
        key = token_key(token)
        now = self._clock()
        for endpoint in self._endpoints:
            cached = endpoint.cache.get(key, now)
            if cached is not None:
                return cached
        for endpoint in self._endpoints:
            verified = await self._ask(endpoint, token, now)
            if verified is not None:
                endpoint.cache.put(key, verified, now, verified.expires)
                return verified
        raise TokenRejected("introspection_inactive", "no introspection endpoint reports the token active")

    async def _ask(self, endpoint: _Endpoint, token: str, now: float) -> VerifiedToken | None:
        cfg = endpoint.config
        body = urlencode({"token": token, "token_type_hint": "access_token"}).encode()
        self.calls += 1
        try:
            response: HttpResponse = await self._fetch(
                cfg.endpoint, method="POST", body=body, timeout=cfg.timeout, max_bytes=cfg.max_bytes,
                headers=(("Content-Type", "application/x-www-form-urlencoded"),
                         ("Authorization", endpoint.authorization)))
            if response.status != 200:
                raise FetchError(f"introspection answered HTTP {response.status}")
            claims = json.loads(response.body)
        except (FetchError, ValueError) as exc:
            raise TokenRejected("introspection_unavailable", f"{cfg.name}: {exc}", status=503) from exc
        if not isinstance(claims, dict) or claims.get("active") is not True:  # RFC 7662 §2.2
            return None
        exp = claims.get("exp")
        if isinstance(exp, bool) or (exp is not None and not isinstance(exp, int | float)):
            return None
        expires = float(exp) if exp is not None else now + cfg.cache_ttl
        if expires <= now:
            return None
        if cfg.issuer is not None and claims.get("iss", cfg.issuer) != cfg.issuer:
            return None
        if cfg.audiences and not string_set(claims.get("aud"), split=False) & set(cfg.audiences):
            return None
        sub, jti = claims.get("sub"), claims.get("jti")
        client = claims.get("client_id")
        cnf = claims.get("cnf")
        x5t = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        iat = claims.get("iat")
        headers = tuple((h.header, v) for h in cfg.claim_to_headers
                        if (v := header_value(claims.get(h.claim))) is not None)
        return VerifiedToken(
            provider=cfg.name, issuer=cfg.issuer or cfg.name, claims=claims,
            subject=sub if isinstance(sub, str) else None,
            scopes=string_set(claims.get(cfg.scope_claim), split=True), roles=frozenset(),
            expires=expires, jti=jti if isinstance(jti, str) else None,
            issued_at=float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None,
            client_id=client if isinstance(client, str) else None,
            cnf_x5t=x5t if isinstance(x5t, str) else None, headers=headers, method="introspection",
        )
