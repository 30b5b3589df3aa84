"""Config models of the identity layer: the per-class policy, identity providers and consumers.

```yaml
providers:
  jwt:
    - name: corp
      issuer: https://idp.example.com
      audiences: [api://orders]
      algorithms: [ES256, RS256]
      discovery: true
consumers:
  - name: billing
    roles: [reader]
    credentials:
      - {type: api_key, id: 3f9a0c1d2e4b,
         key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}
      - {type: jwt, client_id: billing-service}
```
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from bastion.config.base import Duration, Model, Size, control
from bastion.config.secrets import SecretRef

Method = Literal["jwt", "api_key", "mtls", "introspection"]

# RFC 8725 §3.1: the verifier fixes the algorithms; `none` is not even expressible here.
Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519",
    "HS256", "HS384", "HS512",
]
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_HEADER = r"^[a-z0-9][a-z0-9-]*$"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


def check_url(url: str, allow_insecure_http: bool, field: str) -> str:
    """Only https, except for loopback hosts or when the operator explicitly allows plain http."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK and not allow_insecure_http:
        raise ValueError(f"{field} must use https (allow_insecure_http: true only inside a trusted network)")
    return url


class IdentityPolicy(Model):
    """`identity: {required: true, methods: [jwt, api_key], require_consumer: true}`"""

    required: bool = control(
        True, stricter="true",
        description="A verified identity is required (`required: false` lets anonymous callers through, "
                    "but a credential that is sent is still verified).",
    )
    methods: list[Method] = control(
        ["jwt"], stricter="subset",
        description="Accepted credential types, e.g. `methods: [jwt, mtls]`.",
    )
    require_consumer: bool = control(
        False, stricter="true",
        description="Only known, enabled consumers may call (`require_consumer: true`); others get 403.",
    )
    allow_query_token: bool = control(
        False, stricter="false",
        description="Accept a bearer token in the `access_token` query parameter (RFC 6750 §2.3; "
                    "it leaks into logs).",
    )
    allow_query_api_key: bool = control(
        False, stricter="false",
        description="Accept an API key in the `api_key` query parameter.",
    )
    forward_credential: bool = control(
        False, stricter="false",
        description="Send the verified credential (Authorization / API key header) on to the upstream.",
    )
    require_bound_tokens: bool = control(
        False, stricter="true",
        description="Only certificate-bound access tokens (RFC 8705 `cnf.x5t#S256`) are accepted.",
    )
    on_revocation_unavailable: Literal["closed", "open"] = control(
        "closed", stricter="order", order=("open", "closed"),
        description="When the deny list (state backend) cannot answer: `closed` refuses with 503 "
                    "`revocation_unavailable`; `open` lets verified credentials through unchecked.",
    )
    api_key_header: str = control(
        "x-api-key", stricter="free", pattern=_HEADER,
        description="Header carrying the API key, e.g. `api_key_header: x-api-key`.",
    )

    @model_validator(mode="after")
    def _methods_when_required(self) -> IdentityPolicy:
        if self.required and not self.methods:
            raise ValueError("identity.required is true but identity.methods is empty: name a method")
        return self


class ClaimHeader(Model):
    """`{claim: sub, header: x-user-id}`: a verified claim sent upstream in a header Bastion sets."""

    claim: str = Field(min_length=1)
    header: str = Field(pattern=_HEADER)


class JwksCacheConfig(Model):
    """How a provider's JWKS is cached and refreshed: `jwks_cache: {default_ttl: 10m, cooldown: 30s}`"""

    default_ttl: Duration = Field(600.0, description="Cache time when the JWKS response has no max-age.")
    min_ttl: Duration = Field(60.0, description="Lower bound for the response's Cache-Control max-age.")
    max_ttl: Duration = Field(86400.0, description="Upper bound for the response's Cache-Control max-age.")
    cooldown: Duration = Field(30.0, description="At most one refetch per cooldown (unknown `kid`s, errors).")
    stale_grace: Duration = Field(6 * 3600.0, description="How long old keys serve while the IdP is down.")
    timeout: Duration = Field(5.0, gt=0, description="Timeout of one fetch (connect, send, receive).")
    max_bytes: Size = Field(512 * 1024, description="Largest JWKS or discovery document accepted.")


class RegisteredKeysConfig(Model):
    """Keys registered at runtime by `bastion probe` through the admin API (`POST /probe/credentials`, admin
    auth, audited), each trusted until its registration expires: `registered_keys: {max_ttl: 15m}`."""

    max_ttl: Duration = Field(900.0, gt=0, le=86400, description="Longest trust of one registered key, e.g. "
                              "`15m`; the probe asks for less and the registration expires by itself.")


class JwtProviderConfig(Model):
    """An issuer of JWT access tokens (RFC 9068). Tokens are matched to providers by exact `iss`."""

    name: str = Field(pattern=_NAME)
    issuer: str = Field(min_length=1, description="Exact `iss` value, e.g. `https://idp.example.com/realms/x`.")
    audiences: list[str] = Field(min_length=1, description="`aud` must contain one of these.")
    algorithms: list[Algorithm] = Field(["RS256", "ES256"], min_length=1, description="Allowed `alg` values.")
    jwks_uri: str | None = Field(None, description="Where the JWKS is fetched, e.g. `https://idp/jwks.json`.")
    discovery: bool = Field(
        False, description="Find `jwks_uri` in `<issuer>/.well-known/openid-configuration`."
    )
    jwks_file: Path | None = Field(None, description="A local JWKS file (the only source for HS* keys).")
    hmac_key: SecretRef | None = Field(None, description="Or the HS* shared key itself by reference: "
                                       "`{env: JWT_HMAC_KEY}` or `{file: secrets/jwt-hmac}` (its UTF-8 bytes).")
    typ: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        ["at+jwt"], min_length=1, description="Accepted `typ` values (RFC 9068 §2.1), e.g. `[at+jwt, JWT]`.")
    allow_missing_typ: bool = Field(False, description="Accept tokens without a `typ` header (some IdPs).")
    leeway: Duration = Field(30.0, le=300, description="Clock skew allowed for `exp`, `nbf` and `iat`.")
    max_lifetime: Duration = Field(86400.0, gt=0, description="Longest accepted `exp - iat`.")
    required_claims: list[str] = Field(["sub", "iat"], description="Claims required besides exp/iss/aud.")
    scope_claim: str = Field("scope", description="Scopes: a space-separated string or a list.")
    roles_claim: str | None = Field("roles", description="Claim with the caller's roles (a list), or null.")
    consumer_claim: str = Field("client_id", description="Client id claim, mapped to consumers (or `azp`).")
    claim_to_headers: list[ClaimHeader] = Field(default_factory=list)
    max_token_bytes: Size = Field(8192, ge=64, description="Tokens longer than this are rejected unparsed.")
    allow_insecure_http: bool = Field(False, description="Allow an http:// JWKS/discovery URL off loopback.")
    jwks_cache: JwksCacheConfig = JwksCacheConfig()
    registered_keys: RegisteredKeysConfig | None = Field(None, description="Or keys registered at runtime "
                                                         "for the probe (docs/posture.md): `{max_ttl: 15m}`.")

    @model_validator(mode="after")
    def _one_source(self) -> JwtProviderConfig:
        sources = [self.jwks_uri is not None, self.discovery, self.jwks_file is not None, self.hmac_key is not None,
                   self.registered_keys is not None]
        if sum(sources) != 1:
            raise ValueError(f"provider {self.name!r}: set one of jwks_uri, discovery: true, jwks_file, hmac_key, "
                             "registered_keys")
        if self.registered_keys is not None and self.algorithms != ["ES256"]:
            raise ValueError(f"provider {self.name!r}: registered keys are P-256, so algorithms must be [ES256]")
        if self.jwks_uri is not None:
            check_url(self.jwks_uri, self.allow_insecure_http, "jwks_uri")
        if self.discovery:
            check_url(self.issuer, self.allow_insecure_http, "issuer (discovery)")
        if HMAC_ALGORITHMS.intersection(self.algorithms) and self.jwks_file is None and self.hmac_key is None:
            raise ValueError(f"provider {self.name!r}: HS* algorithms need a local jwks_file (shared secrets "
                             "are never fetched)")
        return self


class IntrospectionProviderConfig(Model):
    """An OAuth 2.0 token introspection endpoint (RFC 7662) for opaque tokens."""

    name: str = Field(pattern=_NAME)
    endpoint: str
    issuer: str | None = Field(None, description="The identity's issuer; `iss` must match if sent.")
    client_id: str = Field(min_length=1)
    client_secret_env: str | None = Field(None, min_length=1, description="Environment variable with the "
                                          "client secret (or `client_secret`).")
    client_secret: SecretRef | None = Field(None, description="`{env: NAME}` or `{file: PATH}`.")
    audiences: list[str] = Field(default_factory=list, description="If set, `aud` must contain one of these.")
    cache_ttl: Duration = Field(60.0, description="Longest time an introspection answer is reused.")
    timeout: Duration = Field(5.0, gt=0)
    max_bytes: Size = Field(256 * 1024, ge=256, description="Largest introspection response body accepted (a "
                            "larger one is a failure: 503 `introspection_unavailable`, fail closed).")
    scope_claim: str = "scope"
    claim_to_headers: list[ClaimHeader] = Field(default_factory=list)
    allow_insecure_http: bool = False

    @model_validator(mode="after")
    def _url(self) -> IntrospectionProviderConfig:
        check_url(self.endpoint, self.allow_insecure_http, "endpoint")
        if (self.client_secret is None) == (self.client_secret_env is None):
            raise ValueError("set one of client_secret ({env: NAME} or {file: PATH}), client_secret_env")
        return self


CAEP_EVENT = "https://schemas.openid.net/secevent/caep/event-type/"
RISC_EVENT = "https://schemas.openid.net/secevent/risc/event-type/"
REVOKING_EVENTS = (CAEP_EVENT + "session-revoked", CAEP_EVENT + "credential-change",
                   RISC_EVENT + "sessions-revoked")


class SsfTransmitterConfig(Model):
    """A Shared Signals (CAEP/RISC) transmitter that pushes Security Event Tokens to Bastion (RFC 8417,
    RFC 8935). On a revoking event, the subject's tokens issued before the event are denied.

    ```yaml
    providers:
      ssf:
        - name: corp-caep
          issuer: https://idp.example.com            # exact `iss` of the SETs
          jwks_uri: https://idp.example.com/ssf/jwks.json
          audience: https://gateway.example.com/ssf  # `aud` must contain one of these
    ```
    """

    name: str = Field(pattern=_NAME)
    issuer: str = Field(min_length=1, description="Exact `iss` of the transmitter's SETs.")
    audience: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        min_length=1, description="The SET's `aud` must contain one of these (the receiver's own names).")
    algorithms: list[Algorithm] = Field(["RS256", "ES256"], min_length=1, description="Allowed `alg` values.")
    jwks_uri: str | None = Field(None, description="The transmitter's JWKS, e.g. `https://idp/ssf/jwks`.")
    jwks_file: Path | None = Field(None, description="A local JWKS file instead (the only source for HS*).")
    authorization_env: str | None = Field(
        None, description="Environment variable holding the exact `Authorization` header value the "
                          "transmitter sends with each push (SSF stream `delivery.authorization_header`).")
    authorization: SecretRef | None = Field(None, description="The same, as `{env: NAME}` or `{file: PATH}`.")
    leeway: Duration = Field(30.0, le=300, description="Clock skew allowed for `iat` and `exp`.")
    max_age: Duration = Field(
        3600.0, gt=0, description="Oldest accepted SET (`iat`); its `jti` is remembered this long to refuse "
                                  "replays.")
    revoke_for: Duration | None = Field(
        None, description="How long a revoked subject stays denied (default: the longest `max_lifetime` "
                          "plus `leeway` of the JWT providers, or 1d).")
    subject_issuers: list[str] = Field(
        default_factory=list, description="Accept `iss_sub` subjects only of these issuers (empty: any).")
    events: list[str] = Field(
        list(REVOKING_EVENTS), min_length=1,
        description="Event types that revoke the subject; other events are accepted and ignored.")
    step_up_events: list[str] = Field(
        [CAEP_EVENT + "assurance-level-change"],
        description="Events that revoke and answer `insufficient_user_authentication` (RFC 9470) instead of "
                    "`invalid_token`: the user must authenticate again at a higher level.")
    step_up_acr_values: list[str] = Field(
        default_factory=list, description="`acr_values` of that challenge (empty: the event's `previous_level`).")
    step_up_max_age: int | None = Field(None, ge=0, description="`max_age` of that challenge (seconds).")
    max_bytes: Size = Field(64 * 1024, ge=256, description="Largest SET accepted.")
    allow_insecure_http: bool = Field(False, description="Allow an http:// JWKS URL off loopback.")
    jwks_cache: JwksCacheConfig = JwksCacheConfig()

    @model_validator(mode="after")
    def _source(self) -> SsfTransmitterConfig:
        if (self.jwks_uri is None) == (self.jwks_file is None):
            raise ValueError(f"ssf transmitter {self.name!r}: set one of jwks_uri, jwks_file")
        if self.jwks_uri is not None:
            check_url(self.jwks_uri, self.allow_insecure_http, "jwks_uri")
        if HMAC_ALGORITHMS.intersection(self.algorithms) and self.jwks_file is None:
            raise ValueError(f"ssf transmitter {self.name!r}: HS* algorithms need a local jwks_file")
        return self


class ProvidersConfig(Model):
    """`providers: {jwt: [...], introspection: [...], ssf: [...]}`"""

    jwt: list[JwtProviderConfig] = Field(default_factory=list)
    introspection: list[IntrospectionProviderConfig] = Field(default_factory=list)
    ssf: list[SsfTransmitterConfig] = Field(default_factory=list, description="Shared Signals transmitters.")
    token_cache_size: int = Field(
        10_000, ge=1,
        description="Verified JWTs kept (by SHA-256, until `exp`, at most 5 minutes), and as many identities built "
                    "from them, e.g. `token_cache_size: 50000`. A token beyond it is verified again; a flood of "
                    "never-seen tokens evicts only tokens seen once.",
    )

    @model_validator(mode="after")
    def _unique(self) -> ProvidersConfig:
        names = [p.name for p in self.jwt] + [p.name for p in self.introspection] + [p.name for p in self.ssf]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"provider names must be unique: {', '.join(sorted(dup))}")
        issuers = [p.issuer for p in self.jwt]
        dup = {i for i in issuers if issuers.count(i) > 1}
        if dup:
            raise ValueError(f"two JWT providers share the issuer {', '.join(sorted(dup))}")
        issuers = [p.issuer for p in self.ssf]
        dup = {i for i in issuers if issuers.count(i) > 1}
        if dup:
            raise ValueError(f"two ssf transmitters share the issuer {', '.join(sorted(dup))}")
        return self


class ApiKeyCredential(Model):
    """`{type: api_key, id: k3f9a0c1d2e4b, key_sha256: <hex>, expires: 2026-12-31T00:00:00Z}`"""

    type: Literal["api_key"]
    id: str = Field(pattern=r"^[A-Za-z0-9]{4,64}$")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key, hex (never the key).")
    expires: datetime | None = None
    revoked: bool = False

    @field_validator("key_sha256", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-31T00:00:00Z")
        return value


class JwtCredential(Model):
    """`{type: jwt, client_id: billing-service}` or `{type: jwt, sub: svc-42, provider: corp}`"""

    type: Literal["jwt"]
    provider: str | None = Field(None, description="Only tokens of this provider (name) match.")
    client_id: str | None = None
    sub: str | None = None
    revoked: bool = False

    @model_validator(mode="after")
    def _one(self) -> JwtCredential:
        if (self.client_id is None) == (self.sub is None):
            raise ValueError("a jwt credential names exactly one of client_id or sub")
        return self


_HEX_FP = re.compile(r"^[0-9a-fA-F]{2}(:?[0-9a-fA-F]{2}){31}$")


class MtlsCredential(Model):
    """`{type: mtls, subject: "CN=billing,O=Example"}`, `{type: mtls, san: billing.example.com}` or
    `{type: mtls, x5t_s256: <base64url or hex SHA-256 of the DER certificate>}`"""

    type: Literal["mtls"]
    subject: str | None = None
    san: str | None = None
    x5t_s256: str | None = None
    revoked: bool = False

    @model_validator(mode="after")
    def _one(self) -> MtlsCredential:
        if sum(v is not None for v in (self.subject, self.san, self.x5t_s256)) != 1:
            raise ValueError("an mtls credential names exactly one of subject, san or x5t_s256")
        return self


Credential = Annotated[ApiKeyCredential | JwtCredential | MtlsCredential, Field(discriminator="type")]


class ConsumerConfig(Model):
    """A named caller (application, partner, service) and its credentials."""

    name: str = Field(pattern=_NAME)
    disabled: bool = Field(False, description="A disabled consumer is refused (403) with any credential.")
    roles: list[str] = Field(default_factory=list)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list, description="Source networks the consumer may call from (empty: any).")
    tier: str | None = Field(None, description="Rate-limit tier name, read by the traffic layer.")
    tenant: str | None = Field(None, description="The consumer's tenant, for owner rules "
                                                 "(`authz.owner: [{..., equals: consumer_tenant}]`).")
    credentials: list[Credential] = Field(default_factory=list)


def check_consumers(consumers: list[ConsumerConfig]) -> list[str]:
    """Cross-consumer rules: unique names, API key ids and credential mappings. Returns error messages."""
    errors: list[str] = []
    seen: dict[tuple[str, ...], str] = {}
    for consumer in consumers:
        keys: list[tuple[str, ...]] = [("name", consumer.name)]
        for cred in consumer.credentials:
            if isinstance(cred, ApiKeyCredential):
                keys += [("api_key id", cred.id), ("api_key hash", cred.key_sha256)]
            elif isinstance(cred, JwtCredential):
                keys.append(("jwt", cred.provider or "*", cred.client_id or "", cred.sub or ""))
            else:
                keys.append(("mtls", cred.subject or "", cred.san or "", cred.x5t_s256 or ""))
        for key in keys:
            if key in seen:
                errors.append(f"consumers: {key[0]} {' '.join(k for k in key[1:] if k)!s} is used by both "
                              f"{seen[key]!r} and {consumer.name!r}")
            seen[key] = consumer.name
    return errors
