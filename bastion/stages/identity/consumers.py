"""Consumers and their credentials: the index built once per config load, and API key generation.

API keys look like `bsk_<id>_<secret>`. The id selects the stored credential; the SHA-256 of the whole key is
then compared in constant time with the stored hash. Plaintext keys are never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from bastion.stages.identity.config import (
    ApiKeyCredential,
    ConsumerConfig,
    JwtCredential,
    MtlsCredential,
)
from bastion.stages.identity.mtls import CertInfo, normalize_thumbprint
from bastion.stages.traffic.iprules import parse_ip

KEY_PREFIX = "bsk"
_KEY = re.compile(r"^bsk_([A-Za-z0-9]{4,64})_([A-Za-z0-9_-]{16,256})$")
_CONSUMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_api_key(consumer: str) -> tuple[str, str]:
    """A fresh random API key for `consumer` (shown once) and the YAML credential line for its config."""
    if not _CONSUMER.match(consumer):
        raise ValueError(f"invalid consumer name {consumer!r}")
    key_id = "k" + secrets.token_hex(6)  # starts with a letter: YAML never reads it as a number
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    line = f'- {{type: api_key, id: "{key_id}", key_sha256: "{hash_key(key)}"}}  # consumer {consumer}'
    return key, line


@dataclass(frozen=True, slots=True)
class Consumer:
    """A consumer as the request path sees it."""

    name: str
    disabled: bool
    roles: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    tier: str | None

    def allows_ip(self, ip: str) -> bool:
        if not self.networks:
            return True
        addr = parse_ip(ip)  # IPv4-mapped IPv6 from a dual-stack listener counts as its IPv4 address
        if addr is None:
            return False
        return any(addr in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """The outcome of an API key lookup: the consumer, or the reason it failed."""

    consumer: Consumer | None
    reason: str = ""
    key_id: str | None = None


class ConsumerIndex:
    """Lookups from a credential to its consumer; every map is built once per config load."""

    def __init__(self, consumers: list[ConsumerConfig]) -> None:
        self.by_name: dict[str, Consumer] = {}
        self._keys: dict[str, tuple[Consumer, ApiKeyCredential]] = {}
        self._jwt: dict[tuple[str | None, str, str], tuple[Consumer, JwtCredential]] = {}
        self._mtls: dict[tuple[str, str], tuple[Consumer, MtlsCredential]] = {}
        for cfg in consumers:
            consumer = Consumer(cfg.name, cfg.disabled, frozenset(cfg.roles), tuple(cfg.networks), cfg.tier)
            self.by_name[cfg.name] = consumer
            for cred in cfg.credentials:
                if isinstance(cred, ApiKeyCredential):
                    self._keys[cred.id] = (consumer, cred)
                elif isinstance(cred, JwtCredential):
                    field, value = ("client_id", cred.client_id) if cred.client_id else ("sub", cred.sub)
                    self._jwt[(cred.provider, field, value or "")] = (consumer, cred)
                elif cred.x5t_s256 is not None:
                    self._mtls[("x5t", normalize_thumbprint(cred.x5t_s256))] = (consumer, cred)
                elif cred.subject is not None:
                    self._mtls[("subject", cred.subject)] = (consumer, cred)
                else:
                    self._mtls[("san", cred.san or "")] = (consumer, cred)

    def api_key(self, key: str, now: datetime) -> KeyMatch:
        """Look the key up by its id and compare the hash in constant time."""
        match = _KEY.match(key)
        if match is None:
            return KeyMatch(None, "api_key_invalid")
        found = self._keys.get(match.group(1))
        presented = hash_key(key)
        if found is None:
            hmac.compare_digest(presented, "0" * 64)  # same work whether or not the id exists
            return KeyMatch(None, "api_key_invalid")
        consumer, cred = found
        if not hmac.compare_digest(presented, cred.key_sha256):
            return KeyMatch(None, "api_key_invalid", cred.id)
        if cred.revoked:
            return KeyMatch(None, "api_key_revoked", cred.id)
        if cred.expires is not None and now >= cred.expires:
            return KeyMatch(None, "api_key_expired", cred.id)
        return KeyMatch(consumer, "", cred.id)

    def for_token(self, provider: str, client_id: str | None,
                  sub: str | None) -> tuple[Consumer | None, bool]:
        """The consumer a verified token maps to (client_id/azp first, then sub), and whether that mapping is
        revoked."""
        for field, value in (("client_id", client_id), ("sub", sub)):
            if value is None:
                continue
            for scope in (provider, None):
                found = self._jwt.get((scope, field, value))
                if found is not None:
                    return found[0], found[1].revoked
        return None, False

    def for_certificate(self, info: CertInfo) -> tuple[Consumer | None, bool]:
        """The consumer a verified client certificate maps to: thumbprint, then subject, then any SAN."""
        candidates = [("x5t", info.x5t_s256), ("subject", info.subject)] + [("san", s) for s in info.sans]
        for key in candidates:
            found = self._mtls.get(key)
            if found is not None:
                return found[0], found[1].revoked
        return None, False
