"""Transport settings: what a TLS listener offers, and what a class demands of the connection.

A listener's settings shape the handshake; a class's `transport:` section is the demand every TLS listener must
meet (routes are served on every listener, so `validate` refuses a listener weaker than a class).

What Python's `ssl` (3.11, OpenSSL 3.0) can set, measured in tests/stages/transport/test_tls_settings.py:
- minimum version: yes (`minimum_version`).
- TLS 1.2 cipher suites: yes (`set_ciphers`). TLS 1.3 suites: **no** (`set_ciphers` does not touch them; the
  three OpenSSL defaults, all AEAD with forward secrecy, are always offered).
- key-exchange groups: **exactly one** (`set_ecdh_curve` calls `SSL_CTX_set1_groups` with one group, for TLS
  1.2 and 1.3 alike); a list of several is not settable, so at most one group may be configured.
- session resumption: tickets yes (`OP_NO_TICKET`, `num_tickets = 0`), which ends TLS 1.3 resumption; TLS 1.2
  session-id resumption from the server cache **cannot** be turned off (no `SSL_CTX_set_session_cache_mode`).
- ALPN: yes (`set_alpn_protocols`).
"""

from __future__ import annotations

import ssl
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from bastion.config.base import Duration, Model, control

TlsVersion = Literal["1.2", "1.3"]
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# Forward-secret AEAD suites for TLS 1.2 (OpenSSL names), the only ones a listener offers by default.
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
)
# OpenSSL 3.0's default key-exchange groups (used when a listener names none).
DEFAULT_GROUPS = ("X25519", "prime256v1", "X448", "secp521r1", "secp384r1")
ALPN_PROTOCOLS = ("h2", "http/1.1")


@cache
def known_ciphers() -> frozenset[str]:
    """Every TLS 1.2 suite this OpenSSL knows (names as `set_ciphers` takes them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    return frozenset(c["name"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3")


def _check_ciphers(value: list[str]) -> list[str]:
    unknown = [name for name in value if name not in known_ciphers()]
    if unknown:
        raise ValueError(f"unknown TLS 1.2 cipher suite(s) {unknown} (OpenSSL names, e.g. {DEFAULT_CIPHERS[0]}); "
                         "TLS 1.3 suites cannot be chosen from Python's ssl")
    if not value:
        raise ValueError("an empty cipher list refuses every TLS 1.2 client: set `min_version: '1.3'` instead")
    return value


def _check_groups(value: list[str]) -> list[str]:
    for name in value:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ecdh_curve(name)
        except (ValueError, ssl.SSLError):
            raise ValueError(f"unknown key-exchange group {name!r} (e.g. X25519, prime256v1)") from None
    return value


# A cipher or group list, checked the same way where a listener offers it and where a class allows it.
Ciphers = Annotated[list[str], AfterValidator(_check_ciphers)]
Groups = Annotated[list[str], AfterValidator(_check_groups)]


class ListenerTlsSettings(Model):
    """The handshake a TLS listener offers: `{min_version: "1.3", session_tickets: false, groups: [X25519]}`"""

    min_version: TlsVersion = Field("1.2", description="Oldest TLS version accepted (`\"1.3\"` refuses 1.2).")
    ciphers: Ciphers = Field(
        default_factory=lambda: list(DEFAULT_CIPHERS),
        description="TLS 1.2 suites offered, OpenSSL names (`[ECDHE-ECDSA-AES256-GCM-SHA384]`). TLS 1.3 suites "
        "are not settable from Python's ssl.",
    )
    groups: Groups | None = Field(
        None, max_length=1,
        description="Key-exchange group (`[X25519]`); Python's ssl can set exactly one. Absent: OpenSSL's "
        "defaults (X25519, P-256, X448, P-521, P-384).",
    )
    session_tickets: bool = Field(
        True, description="`false`: no session tickets (1.2 and 1.3): no TLS 1.3 resumption. TLS 1.2 still "
        "resumes by session id (not settable from Python's ssl).",
    )
    alpn: list[Literal["h2", "http/1.1"]] | None = Field(
        None, description="ALPN protocols offered, in order (`[http/1.1]`). Absent: h2 and http/1.1 when the "
        "listener has `http2: true`.",
    )


class RevocationConfig(Model):
    """`gateway.revocation`: where client-certificate revocation status comes from.

    `{crls: [certs/partner-ca.crl], ocsp: true, grace: 1h}`; classes choose whether to check (`transport.
    revocation: soft|hard`).
    """

    issuers: list[Path] = Field(
        default_factory=list, description="CA certificates (PEM) issuing client certificates: CRLs and OCSP answers "
        "must be signed by one of them (or by a responder it delegated). Relative paths: the working directory.",
    )
    crls: list[Path] = Field(default_factory=list, description="CRL files (PEM or DER), reloaded when they change.")
    ocsp: bool = Field(True, description="Ask the OCSP responder named in the certificate (AIA) or `ocsp_responder`.")
    ocsp_responder: str | None = Field(None, description="`http://ocsp.example.com`: used instead of the AIA URL.")
    grace: Duration = Field(3600.0, description="How long past its `next_update` a CRL or OCSP answer is used.")
    timeout: Duration = Field(2.0, gt=0, description="Longest wait for an OCSP responder.")
    cache_size: int = Field(10_000, ge=1, description="OCSP answers kept (LRU, each until its next_update).")
    reload_interval: Duration = Field(5.0, description="How often CRL files are checked for change.")

    @field_validator("ocsp_responder")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("an OCSP responder is an http:// or https:// URL")
        return value


Requirement = Literal["optional", "required"]


class TransportPolicy(Model):
    """`transport: {tls: required, mtls: optional, min_tls: "1.3", revocation: hard}`"""

    tls: Requirement = control(
        "optional", stricter="order", order=("optional", "required"),
        description="`required`: plaintext requests are refused with 403 (e.g. `tls: required`).",
    )
    mtls: Requirement = control(
        "optional", stricter="order", order=("optional", "required"),
        description="`required`: a client certificate verified against the listener's CA is required.",
    )
    min_tls: TlsVersion = control(
        "1.2", stricter="order", order=("1.2", "1.3"),
        description="Oldest TLS version every TLS listener must refuse below (`\"1.3\"`).",
    )
    ciphers: Ciphers = control(
        list(DEFAULT_CIPHERS), stricter="subset",
        description="TLS 1.2 suites a listener may offer (allowlist, OpenSSL names).",
    )
    groups: Groups = control(
        list(DEFAULT_GROUPS), stricter="subset",
        description="Key-exchange groups a listener may offer (allowlist: `[X25519]`).",
    )
    session_resumption: bool = control(
        True, stricter="false",
        description="`false`: no resumed handshakes: listeners need `session_tickets: false` and TLS 1.3 only.",
    )
    revocation: Literal["off", "soft", "hard"] = control(
        "off", stricter="order", order=("off", "soft", "hard"),
        description="Check client certificates against `gateway.revocation` (CRLs, OCSP): `hard` refuses when "
        "the status cannot be learned, `soft` lets the request through and audits it.",
    )

    @model_validator(mode="after")
    def _revocation_needs_mtls(self) -> TransportPolicy:
        if self.revocation != "off" and self.mtls != "required":
            raise ValueError("`revocation` checks client certificates: it needs `mtls: required`")
        return self
