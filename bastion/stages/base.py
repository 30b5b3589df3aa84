"""The contract between the pipeline and its stages.

A stage is built once per route when the config is compiled, from that route's effective policy for its
control, and has one entry point: `async def check(ctx) -> Decision`. Anything costly (keys, validators,
compiled patterns) is prepared in `build`, never per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion import policy_ids as ids
from bastion.context import Decision, RequestContext


class Stage(Protocol):
    """One control on one route."""

    control: str
    # A stage with `needs_body = True` runs after the body is read (up to the route's max_body_bytes) and
    # finds it in `ctx.body`; all others run on the request head, before any body byte is read.

    async def check(self, ctx: RequestContext) -> Decision: ...


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
    """Process-wide things stages may use; injected so tests can replace the clock and the state."""

    wall_clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    state: Any = None  # bastion.state backend (memory or Redis)
    audit: Any = None  # bastion.audit.AuditLog
    registry: Any = None  # the prometheus_client CollectorRegistry `/metrics` serves (None: metrics not exported)
    extra: dict[str, Any] = field(default_factory=dict)
