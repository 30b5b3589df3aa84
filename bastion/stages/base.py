"""The contract between the pipeline and its stages.

A stage is built once per route when the config is compiled, from that route's effective policy for its
control, and has one entry point: `async def check(ctx) -> Decision`. Anything costly (keys, validators,
compiled patterns) is prepared in `build`, never per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bastion import policy_ids as ids
from bastion.context import Decision, RequestContext

if TYPE_CHECKING:  # types only: the wiring names what it carries without importing those layers at run time
    from bastion.audit.blocks import BlockList
    from bastion.audit.detect import Detector
    from bastion.stages.identity.jwks import Fetcher
    from bastion.stages.identity.revocation import RevocationList
    from bastion.stages.traffic.limiter import Alert


class Stage(Protocol):
    """One control on one route."""

    control: str
    # True: the stage runs after the body is read (up to the route's max_body_bytes) and finds it in `ctx.body`;
    # False: it runs on the request head, before any body byte is read.
    needs_body: bool

    async def check(self, ctx: RequestContext) -> Decision: ...


class Shared(Protocol):
    """What a layer prepares once per config load for all its routes' stages (key caches, clients, limiters).

    The runtime starts it once the config is compiled, asks it whether it is ready (readiness probe), and closes
    it when the config is replaced."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def ready(self) -> bool: ...


class SharedBase:
    """A `Shared` with nothing to start, check or close: subclasses override what they hold."""

    __slots__ = ()

    async def start(self) -> None:
        """Fetch or open what the layer needs before it serves (nothing here)."""

    async def close(self) -> None:
        """Release what `start` opened (nothing here)."""

    def ready(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """What a stage may know about the route it is built for."""

    api: str
    route: str  # route name, unique within the API
    klass: str  # the API's class
    path: str  # full path template, e.g. /orders/{id}
    methods: frozenset[str]
    path_params: tuple[str, ...] = ()
    operation: dict[str, Any] | None = None  # the OpenAPI operation object, when the route came from one
    admin: bool = False  # an administrative route (config `admin: true` or OpenAPI `x-bastion-admin`)
    sources: dict[str, str] = field(default_factory=dict)  # control id -> where its value came from

    @property
    def route_id(self) -> str:
        return f"{self.api}/{self.route}"

    def policy_id(self, control: str) -> str:
        """`<origin>/<api>/<route>/<control>`: origin is the class, API, route or exception that set it."""
        section = control.split(".", 1)[0]
        origin = self.sources.get(control) or self.sources.get(section) or f"class:{self.klass}"
        return ids.policy_id(origin, self.api, self.route, control)


@dataclass(slots=True)
class Services:
    """Process-wide things stages may use, each a named field; injected so tests can replace any of them."""

    wall_clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    state: Any = None  # bastion.state backend (memory or Redis)
    audit: Any = None  # bastion.audit.AuditLog
    registry: Any = None  # the prometheus_client CollectorRegistry `/metrics` serves (None: metrics not exported)
    blocks: BlockList | None = None  # blocked IPs, subjects and consumers; the stage of the same name
    detector: Detector | None = None  # detections over every request's outcome (they may add blocks)
    alert: Alert | None = None  # limiter events (state backend lost, back); default: an audit admin event
    identity_fetcher: Fetcher | None = None  # HTTP GET for JWKS, discovery and introspection (tests: a fake)
    revocations: RevocationList | None = None  # replaces the deny list kept in `state` (tests)
    ocsp_fetcher: Any = None  # the OCSP round trip (bastion.http.fetch); tests count or fail it
    # where a relative file path in the config is read from: the config file's directory (compile sets it), as
    # `validate` resolves it, whatever directory the gateway was started in
    config_dir: Path | None = None

    def resolve(self, path: Path) -> Path:
        """A config file path as the gateway opens it."""
        return path if path.is_absolute() or self.config_dir is None else self.config_dir / path
