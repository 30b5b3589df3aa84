"""Where and how `compile` says a route is forwarded: plain values, read by the server on every request.

They sit at the bottom of the layers (see docs/architecture.md, "Layers"): `compile` builds them, `server`
uses them, and neither has to import the other to share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where an API's requests go, and how the gateway may connect there."""

    name: str
    scheme: str
    host: str
    port: int
    path_prefix: str  # prepended to the forwarded path ("" when the upstream URL has no path)
    allow_private: bool = False  # a host name may resolve to a private/loopback/link-local address
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: Any = None  # the client key: a path (str), or a bastion.config.secrets.SecretRef
    tls_server_name: str | None = None
    pool: Any = None  # bastion.upstreams.spec.PoolSpec: several targets (host and port above are the first's)
    authority: str = field(init=False, compare=False, repr=False)  # host[:port], as the Host header says it
    _hash: int = field(init=False, compare=False, repr=False)  # the pool key, looked up on every request

    def __post_init__(self) -> None:
        default = 443 if self.scheme == "https" else 80
        object.__setattr__(self, "authority", self.host if self.port == default else f"{self.host}:{self.port}")
        object.__setattr__(self, "_hash", hash((self.name, self.scheme, self.host, self.port, self.path_prefix,
                                                self.allow_private, self.tls_ca, self.tls_cert, self.tls_key,
                                                self.tls_server_name, self.pool)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class GrpcLimits:
    """Per-route gRPC limits."""

    max_message_bytes: int = 4 * 1024 * 1024  # each request message (gRPC's own default receive limit)
    max_messages: int | None = None  # request messages per call (client and bidi streaming)
    max_response_message_bytes: int | None = None
    default_timeout: float | None = None  # deadline when the client sends no grpc-timeout
    max_timeout: float | None = None  # a longer client deadline is cut to this
    connect_timeout: float = 5.0
    decode: Any = None  # first request message -> dict, for owner rules on message fields (descriptor set)
