"""The root of `bastion.yaml`: one pydantic model per section.

```yaml
version: 1
gateway:    {listeners: [{port: 8080}], admin: {port: 9901}, trusted_proxies: [10.0.0.0/8]}
classes:    {public: {identity: {required: true}}, internal: {...}}
providers:  {jwt: [...]}
consumers:  [...]
apis:       [{name: orders, owner: team@example.com, class: public, upstream: http://127.0.0.1:9000}]
exceptions: [{id: EXC-1, target: {api: orders}, controls: [identity], owner: ..., expires: ...}]
```
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from bastion.audit.config import AuditConfig
from bastion.config.admin import AdminAuthConfig
from bastion.config.base import Duration, Model, Size
from bastion.config.drift import DriftConfig
from bastion.config.owners import FileOwners
from bastion.config.secrets import SecretRef
from bastion.http.websocket import WebSocketConfig
from bastion.stages.authz.config import AuthzPolicy
from bastion.stages.flows.config import FlowConfig
from bastion.stages.graphql.config import GraphqlPolicy
from bastion.stages.identity.config import ConsumerConfig, IdentityPolicy, ProvidersConfig
from bastion.stages.input.config import InputPolicy
from bastion.stages.response.config import ResponsePolicy
from bastion.stages.signals import SignalsConfig
from bastion.stages.traffic.config import TrafficPolicy
from bastion.stages.transport import TransportPolicy
from bastion.stages.transport.config import ListenerTlsSettings, RevocationConfig
from bastion.tracing import TracingConfig
from bastion.upstreams.config import LoadBalancingConfig, UpstreamField, check_upstream

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Baseline(Model):
    """The controls of a class. Every section is optional; a missing section has the secure defaults."""

    transport: TransportPolicy = TransportPolicy()
    identity: IdentityPolicy = IdentityPolicy()
    authz: AuthzPolicy = AuthzPolicy()
    traffic: TrafficPolicy = TrafficPolicy()
    input: InputPolicy = InputPolicy()
    graphql: GraphqlPolicy = GraphqlPolicy()
    response: ResponsePolicy = ResponsePolicy()


SECTIONS: tuple[str, ...] = tuple(Baseline.model_fields)


def control_ids() -> set[str]:
    """Every control id an exception may name: a section (`identity`) or one field (`identity.required`)."""
    ids: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            ids.add(f"{prefix}.{name}")
            nested = info.annotation
            if isinstance(nested, type) and issubclass(nested, BaseModel):
                walk(nested, f"{prefix}.{name}")

    for section, info in Baseline.model_fields.items():
        ids.add(section)
        walk(info.annotation, section)  # type: ignore[arg-type]
    return ids


class ClassConfig(Baseline):
    """A security class (`public`, `partner`, `internal`, ...): the baseline every route of its APIs inherits."""

    description: str = ""


class TlsListenerConfig(ListenerTlsSettings):
    """TLS on a listener: `tls: {cert: certs/gw.pem, key: certs/gw.key, client_ca: certs/ca.pem}`"""

    cert: Path
    key: Path | SecretRef = Field(description="The private key: a path, or `{env: NAME}` / `{file: PATH}`.")
    client_ca: Path | None = Field(None, description="CA bundle to verify client certificates (mTLS).")
    client_cert: Literal["none", "optional", "required"] = Field(
        "optional", description="Ask for a client certificate; classes decide whether it is required."
    )


class ListenerConfig(Model):
    """`{address: 0.0.0.0, port: 8443, tls: {...}}`"""

    address: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    tls: TlsListenerConfig | None = None
    http2: bool = Field(True, description="Offer HTTP/2 by TLS ALPN (`h2`), falling back to HTTP/1.1.")
    h2c: bool = Field(False, description="Cleartext HTTP/2 with prior knowledge on this listener.")


class Http2Config(Model):
    """`gateway.http2`: limits of every HTTP/2 connection; each refusal is counted and audited."""

    max_concurrent_streams: int = Field(100, ge=1, description="Advertised; extra streams get REFUSED_STREAM.")
    initial_window_size: Size = Field(256 * 1024, description="Request body buffered per stream.")
    connection_window: Size = Field(1024 * 1024, description="Request bodies buffered per connection.")
    max_header_block_bytes: Size = Field(32 * 1024, description="HEADERS + CONTINUATION bytes of one block.")
    max_continuation_frames: int = Field(16, ge=1, description="CONTINUATION frames per header block.")
    window: Duration = Field(10.0, gt=0, description="The period the frame-rate limits below count over.")
    max_resets: int = Field(200, ge=1, description="RST_STREAM per window (rapid reset, CVE-2023-44487).")
    max_refused: int = Field(200, ge=1, description="Refused streams per window before GOAWAY.")
    max_settings: int = Field(20, ge=1)
    max_pings: int = Field(20, ge=1)
    max_priority: int = Field(200, ge=1)
    max_window_updates: int = Field(2000, ge=1)
    max_empty_frames: int = Field(200, ge=1, description="Empty DATA / unknown frames per window.")
    stall_timeout: Duration = Field(30.0, gt=0, description="A stream that cannot send (zero window) is reset.")
    max_send_buffer: Size = Field(4 * 1024 * 1024, description="Response bytes held for a slow reader.")


class GrpcApiConfig(Model):
    """`grpc:` on an API: its RPC methods become `POST /package.Service/Method` routes."""

    descriptor_set: Path | None = Field(None, description="`protoc --include_imports --descriptor_set_out`.")
    methods: list[str] = Field(default_factory=list, description="Or list them: `[/shop.v1.Orders/Get]`.")
    max_message_bytes: Size = Field(4 * 1024 * 1024, description="Largest request message.")
    max_messages: int | None = Field(None, ge=1, description="Most request messages per call (streaming).")
    default_timeout: Duration | None = Field(None, description="Deadline when the client sends none.")
    max_timeout: Duration | None = Field(None, description="Longer client deadlines are cut to this.")


class AdminConfig(Model):
    """The admin listener: health, metrics, reload, policies, report, dashboard. Loopback by default.

    `auth` (bearer tokens from an admin provider with an admin scope, static token hashes, client
    certificates) is required when the listener is not on loopback.
    """

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = Field(9901, ge=0, le=65535)
    tls: TlsListenerConfig | None = Field(None, description="TLS (and client certificates) for the admin API.")
    auth: AdminAuthConfig | None = None
    max_body_bytes: Size = Field(1024 * 1024, ge=1024, description="Largest admin request body (413 above, "
                                 "audited and counted): a block list or a probe result fits in far less.")

    @model_validator(mode="after")
    def _auth_off_loopback(self) -> AdminConfig:
        if self.enabled and self.auth is None and self.address not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("an admin listener off loopback needs `auth` (admin tokens or client certificates)")
        return self


class ServerLimits(Model):
    """Limits of the HTTP/1.1 server that apply before any route is known."""

    header_timeout: Duration = Field(10.0, description="Time to receive a complete request head (408 after).")
    body_idle_timeout: Duration = Field(30.0, description="Longest pause between two body reads (408 after).")
    min_body_rate: Size = Field(512, description="Bytes/s a request body must average after the grace (408 "
                                "below; 0 turns it off): trickling bodies cannot hold connections.")
    min_body_rate_grace: Duration = Field(10.0, description="Time before the body rate is enforced.")
    keepalive_timeout: Duration = Field(75.0, description="Idle keep-alive connections are closed after this.")
    max_header_bytes: Size = Field(16 * 1024, description="Largest request head (431 above).")
    max_headers: int = Field(100, ge=1, description="Most header fields in a request (431 above).")
    max_upstream_head_bytes: Size = Field(64 * 1024, ge=1, description="Largest upstream response head, each "
                                          "line counted while it arrives (502 `upstream_head_too_large` above).")
    max_rate_limit_keys: int = Field(200_000, ge=100, description="Rate-limit counters kept by the `memory` state "
                                     "backend (one per limit and key, e.g. per client address); when full, a key "
                                     "counted once leaves first. Redis expires its own keys.")
    upstream_pool_size: int = Field(256, ge=1, description="Most pooled connections per upstream.")
    drain_timeout: Duration = Field(30.0, description="How long a graceful shutdown waits for requests.")


DEFAULT_IDENTITY_HEADERS = (
    "x-bastion-*", "x-user-*", "x-consumer-*", "x-client-*", "x-forwarded-user", "x-credential-*",
)


class GatewayConfig(Model):
    """Process-level settings: listeners, admin, proxies, shared state, audit."""

    listeners: list[ListenerConfig] = Field(default_factory=lambda: [ListenerConfig(port=8080)], min_length=1)
    admin: AdminConfig = AdminConfig()
    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list,
        description="Peers whose X-Forwarded-For/Forwarded hops are believed (walked from the right).",
    )
    identity_headers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IDENTITY_HEADERS),
        description="Inbound headers always stripped (`*` suffix = prefix match): only Bastion sets them.",
    )
    limits: ServerLimits = ServerLimits()
    http2: Http2Config = Http2Config()
    state: str = Field("memory", description="`memory` (one process) or `redis://host:6379/0`.")
    state_password: SecretRef | None = Field(None, description="Redis password: `{env: REDIS_PASSWORD}` or "
                                             "`{file: /run/secrets/redis}` (docs/config.md).")
    audit: AuditConfig = AuditConfig()
    max_exception_days: int = Field(90, ge=1, description="Longest allowed exception lifetime.")
    drift: DriftConfig | None = Field(None, description="Alert when the running config's effective policies "
                                      "differ from this approved file (`{approved: approved.yaml, interval: 5m}`).")
    workers: int = Field(1, ge=1, le=64)
    revocation: RevocationConfig = RevocationConfig()
    signals: SignalsConfig = SignalsConfig()
    tracing: TracingConfig | None = Field(None, description="OpenTelemetry spans over OTLP (docs/tracing.md).")

    @field_validator("identity_headers")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [name.lower() for name in value]


class RouteConfig(Model):
    """A route listed in config. With an OpenAPI document, `operation` names an operationId to tighten."""

    name: str | None = Field(None, pattern=_NAME)
    operation: str | None = None
    path: str | None = None
    methods: list[str] = Field(default_factory=list)
    admin: bool = False
    policy: dict[str, Any] = Field(default_factory=dict)
    websocket: bool | WebSocketConfig = Field(False, description="Accept WebSocket upgrades (RFC 6455) on this "
                                              "route, with these limits (`true`: the defaults; docs/websocket.md).")

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        upper = [m.upper() for m in value]
        for method in upper:
            if method not in HTTP_METHODS:
                raise ValueError(f"unknown HTTP method {method!r}")
        return upper

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("a route path starts with '/'")
        return value

    @model_validator(mode="after")
    def _what(self) -> RouteConfig:
        if self.operation is None and (self.path is None or not self.methods):
            raise ValueError("a route needs `path` and `methods`, or `operation` naming an OpenAPI operationId")
        return self


class UpstreamTlsConfig(Model):
    """`upstream_tls: {ca: certs/internal-ca.pem, client_cert: certs/gw-client.pem, client_key: ...}`

    Verification is always on: the system CAs, or `ca`; the name checked is the upstream host (or `server_name`).
    """

    ca: Path | None = Field(None, description="CA bundle the upstream's certificate must chain to.")
    client_cert: Path | None = Field(None, description="Certificate the gateway presents (upstream mTLS).")
    client_key: Path | SecretRef | None = Field(
        None, description="The gateway's private key: a path, or `{env: NAME}` / `{file: PATH}` (re-read on reload).")
    server_name: str | None = Field(None, description="SNI and the name verified, if not the upstream host.")

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTlsConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("`client_cert` and `client_key` go together")
        return self


class ApiConfig(Model):
    """An API behind the gateway: who owns it, its class, where it lives and its routes."""

    name: str = Field(pattern=_NAME)
    owner: str | None = Field(None, description="Team or person accountable (required).")
    klass: str = Field(alias="class")
    upstream: UpstreamField = Field(description="`http://host:port` or `https://host:port`, optionally with a "
                                    "path; or a list of targets, a pool (see `load_balancing`).")
    load_balancing: LoadBalancingConfig | None = Field(None, description="How a pool of targets is used "
                                                       "(docs/upstreams.md).")
    base_path: str = "/"
    strip_base_path: bool = Field(False, description="Forward `/orders/1` under base_path `/orders` as `/1`.")
    hosts: list[str] = Field(default_factory=list)
    openapi: Path | None = None
    openapi_max_bytes: Size = Field(8 * 1024 * 1024, ge=1, description="Largest file of this API's OpenAPI "
                                    "document, each `$ref`'d file alike (refused to load above), e.g. `16MiB`.")
    policy: dict[str, Any] = Field(default_factory=dict, description="Tightens the class for the whole API.")
    routes: list[RouteConfig] = Field(default_factory=list)
    grpc: GrpcApiConfig | None = Field(None, description="A gRPC API: HTTP/2 to the upstream, gRPC answers.")
    upstream_tls: UpstreamTlsConfig | None = Field(None, description="TLS to an https:// upstream.")
    allow_private_upstream: bool = Field(
        False, description="Let an upstream *name* resolve to a private, loopback, link-local or metadata "
        "address (SSRF and DNS rebinding are refused otherwise). An IP literal in `upstream` is explicit.",
    )

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: UpstreamField) -> UpstreamField:
        return check_upstream(value)

    @field_validator("base_path")
    @classmethod
    def _base(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("base_path starts with '/'")
        return value.rstrip("/") or "/"


class ExceptionTarget(Model):
    api: str
    route: str | None = None


class ExceptionConfig(Model):
    """A time-bound waiver of named controls for one API or route. It stops applying at `expires`."""

    id: str = Field(pattern=_NAME)
    target: ExceptionTarget
    controls: list[str] = Field(min_length=1, description="Control ids, e.g. `identity.required`; never `all`.")
    owner: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    evidence: str = Field(min_length=1, description="A link to the ticket or risk acceptance.")
    created: datetime
    expires: datetime

    @field_validator("controls")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        known = control_ids()
        for item in value:
            if item in ("all", "*"):
                raise ValueError("an exception names the controls it waives; 'all' is not allowed")
            if item not in known:
                raise ValueError(f"unknown control {item!r} (known: {', '.join(sorted(known))})")
        return value

    @field_validator("created", "expires")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-31T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _order(self) -> ExceptionConfig:
        if self.expires <= self.created:
            raise ValueError("`expires` must be after `created`")
        return self


class BastionConfig(Model):
    """The whole `bastion.yaml`."""

    version: Literal[1] = 1
    include: list[str] = Field(default_factory=list, description="Files merged into this one (globs, relative "
                               "to it): `[classes.yaml, apis/*.yaml]` (docs/config.md).")
    owners: dict[str, FileOwners] | None = Field(None, description="What each included file may define: "
                                                 "`{apis/orders.yaml: {apis: [team-orders@example.com]}}`.")
    gateway: GatewayConfig = GatewayConfig()
    classes: dict[str, ClassConfig] = Field(min_length=1)
    providers: ProvidersConfig = ProvidersConfig()
    consumers: list[ConsumerConfig] = Field(default_factory=list)
    apis: list[ApiConfig] = Field(default_factory=list)
    exceptions: list[ExceptionConfig] = Field(default_factory=list)
    flows: list[FlowConfig] = Field(default_factory=list, description="Sensitive business flows (OWASP API6).")
