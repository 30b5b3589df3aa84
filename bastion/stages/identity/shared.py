"""What the identity stages of all routes share for one config load: key caches, verifiers, the consumer
index, token caches and the revocation list. Built by `prepare`, started and closed by the server."""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Iterable
from typing import Any

from bastion.config.secrets import hmac_jwks
from bastion.stages.base import Services
from bastion.stages.identity.config import (
    ConsumerConfig,
    IntrospectionProviderConfig,
    JwtProviderConfig,
    ProvidersConfig,
    check_consumers,
)
from bastion.stages.identity.consumers import ConsumerIndex
from bastion.stages.identity.jwks import JwksCache
from bastion.stages.identity.jwt import JwtVerifier, ProviderVerifier
from bastion.stages.identity.metrics import identity_metrics
from bastion.stages.identity.mtls import CertParser
from bastion.stages.identity.registered import RegisteredKeys
from bastion.stages.identity.revocation import RevocationList, StateRevocationList
from bastion.stages.identity.ssf import DEFAULT_REVOKE_FOR, SetReceiver
from bastion.stages.identity.tokencache import Credential, TokenCache
from bastion.state.memory import MemoryState

DEFAULT_PROTECTED = (
    "x-bastion-*", "x-user-*", "x-consumer-*", "x-client-*", "x-forwarded-user", "x-credential-*",
)


def _protected(header: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(header, p) if p.endswith("*") else header == p for p in patterns)


class IdentityShared:
    """Process-wide identity state for one config. Call `await start()` after loading, `await close()` after
    the config is replaced or the server stops."""

    def __init__(
        self,
        providers: ProvidersConfig,
        consumers: list[ConsumerConfig],
        services: Services | None = None,
        *,
        identity_headers: Iterable[str] = DEFAULT_PROTECTED,
    ) -> None:
        services = services or Services()
        errors = check_consumers(consumers)
        patterns = tuple(identity_headers)
        listed: list[JwtProviderConfig | IntrospectionProviderConfig] = [*providers.jwt, *providers.introspection]
        for provider in listed:
            for item in provider.claim_to_headers:
                if not _protected(item.header, patterns):
                    errors.append(f"providers: {provider.name}: claim_to_headers header {item.header!r} is "
                                  "not in gateway.identity_headers, so a client could send it too")
        if errors:
            raise ValueError("; ".join(errors))
        self.wall_clock = services.wall_clock
        self.monotonic = services.monotonic
        self.metrics = identity_metrics(services.registry)
        fetcher = services.identity_fetcher
        extra: dict[str, Any] = {"fetcher": fetcher} if fetcher is not None else {}
        state = services.state if services.state is not None else MemoryState()
        self.jwks: dict[str, JwksCache | RegisteredKeys] = {
            p.name: RegisteredKeys(p.name, p.registered_keys, state) if p.registered_keys is not None else JwksCache(
                p.name, p.jwks_cache, jwks_uri=p.jwks_uri, discovery_issuer=p.issuer if p.discovery else None,
                jwks_file=p.jwks_file and services.resolve(p.jwks_file), jwks_bytes=hmac_jwks(p.hmac_key),
                monotonic=services.monotonic, metrics=self.metrics, **extra)
            for p in providers.jwt
        }
        self.verifier = JwtVerifier([ProviderVerifier(p, self.jwks[p.name]) for p in providers.jwt],
                                    services.wall_clock)
        self.token_cache: TokenCache[Credential] = TokenCache(providers.token_cache_size)
        self.consumers = ConsumerIndex(consumers)
        self.certs = CertParser()
        # The deny list lives in the state backend (shared by workers and instances with Redis, kept across
        # reloads); without a backend (unit tests) in a private in-memory one. `services.revocations` replaces it.
        self.revocation_store = StateRevocationList(state, services.wall_clock)
        self.revocations: RevocationList = (services.revocations if services.revocations is not None
                                            else self.revocation_store)  # `is not None`: an empty list is falsy
        # CAEP / Shared Signals receiver (POST /ssf/events on the admin listener), None without providers.ssf
        self.ssf_receiver: SetReceiver | None = None
        if providers.ssf:
            revoke_for = max((p.max_lifetime + p.leeway for p in providers.jwt), default=DEFAULT_REVOKE_FOR)
            self.ssf_receiver = SetReceiver(providers.ssf, self.revocations, self.revocation_store,
                                            revoke_for=revoke_for, monotonic=services.monotonic,
                                            fetcher=fetcher, audit=services.audit, metrics=self.metrics,
                                            resolve=services.resolve)
        self.introspection: Any = None
        if providers.introspection:
            from bastion.stages.identity.introspection import Introspector

            self.introspection = Introspector(providers.introspection, services, **extra)

    @property
    def jwks_fetch_count(self) -> int:
        """JWKS documents fetched so far, over all providers."""
        return sum(cache.fetch_count for cache in self.jwks.values())

    async def start(self) -> None:
        """Fetch every provider's keys once and start their background refresh."""
        await asyncio.gather(*(cache.start() for cache in self.jwks.values()),
                             *([self.ssf_receiver.start()] if self.ssf_receiver is not None else []))

    async def close(self) -> None:
        await asyncio.gather(*(cache.close() for cache in self.jwks.values()),
                             *([self.ssf_receiver.close()] if self.ssf_receiver is not None else []))

    def ready(self) -> bool:
        """True when every JWT provider has a usable key set (for `/readyz`). SSF transmitter keys do not
        count: a transmitter outage must not take the gateway out of rotation."""
        return all(cache.snapshot()["ready"] for cache in self.jwks.values())
