"""What a reload may change live, and what it must refuse because only a restart applies it.

A reload never reports success while ignoring a change. The gateway-wide sections split in three:
- applied with the routes (`Gateway.install`): `trusted_proxies`, `identity_headers`, `admin.auth`,
  `max_exception_days`, the listeners' certificates and keys (next handshakes);
- swapped with the routes (`bastion.server.swap`, built at prepare, switched at commit): `audit.sinks`, the
  spool settings and `queue_size` (no event lost or repeated), `state` and `state_password` (a new backend,
  blocks and revocations carried over), `tracing` (a new tracer);
- applied here, in place, at commit (`apply_gateway_settings`): `limits` (the server limits every connection
  reads), `audit.detections` and `audit.responses` (a new detector; its windows start empty);
- refused with "needs a restart" naming the field (`restart_needed`): everything that owns a socket or a
  process: listener addresses, ports, protocols and TLS on/off, the admin listener, `workers`, `http2`,
  `drift`, `limits.upstream_pool_size`,
  `limits.max_upstream_head_bytes`, `limits.max_rate_limit_keys`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
import pydantic

from bastion.config.models import GatewayConfig

# The fields compared for a restart, as (label, getter). The certificate paths of a listener are not in the
# list: new files under the same or another path are loaded into the running TLS contexts.
_RESTART_ONLY: tuple[tuple[str, Any], ...] = (
    ("gateway.workers", lambda g: g.workers),
    ("gateway.http2", lambda g: g.http2.model_dump()),
    ("gateway.drift", lambda g: g.drift.model_dump() if g.drift is not None else None),
    ("gateway.limits.upstream_pool_size", lambda g: g.limits.upstream_pool_size),
    ("gateway.limits.max_upstream_head_bytes", lambda g: g.limits.max_upstream_head_bytes),  # read by the pools
    ("gateway.limits.max_rate_limit_keys", lambda g: g.limits.max_rate_limit_keys),  # sizes the state backend
    ("gateway.admin.address", lambda g: str(g.admin.address)),
    ("gateway.admin.port", lambda g: g.admin.port),
    ("gateway.admin.enabled", lambda g: g.admin.enabled),
    ("gateway.admin.tls", lambda g: g.admin.tls is not None),
    ("gateway.listeners", lambda g: len(g.listeners)),
)
_LISTENER_FIELDS = ("address", "port", "http2", "h2c")
_H2_DERIVED = ("header_timeout", "body_idle_timeout", "keepalive_timeout", "max_header_bytes", "max_headers")


def restart_needed(old: GatewayConfig, new: GatewayConfig) -> str | None:
    """None when `new` can be applied live over `old`; otherwise the refusal, naming the first field."""
    for label, get in _RESTART_ONLY:
        if get(old) != get(new):
            return f"{label} changed: needs a restart (the gateway keeps serving its current config)"
    for index, (before, after) in enumerate(zip(old.listeners, new.listeners, strict=True)):
        for name in _LISTENER_FIELDS:
            if str(getattr(before, name, None)) != str(getattr(after, name, None)):
                return (f"gateway.listeners[{index}].{name} changed: needs a restart (the gateway keeps serving "
                        "its current config)")
        if (before.tls is None) != (after.tls is None):
            return (f"gateway.listeners[{index}].tls added or removed: needs a restart (the gateway keeps "
                    "serving its current config)")
    if any(listener.h2c or (listener.tls is not None and listener.http2) for listener in new.listeners):
        for name in _H2_DERIVED:  # HTTP/2 connections hold a frozen copy of these (H2Limits.derive)
            if getattr(old.limits, name) != getattr(new.limits, name):
                return (f"gateway.limits.{name} changed with an HTTP/2 listener: needs a restart (the gateway "
                        "keeps serving its current config)")
    return None


def apply_gateway_settings(runtime: Any, gw: GatewayConfig) -> None:
    """At commit: the server limits (in place: live connections read the same object) and the detector."""
    limits = runtime.limits
    if limits is not None:
        from bastion.server.settings import server_limits

        fresh = server_limits(gw)
        for field in dataclasses.fields(limits):  # not __slots__: the mypyc build's ServerLimits has none
            setattr(limits, field.name, getattr(fresh, field.name))
    services = runtime.services
    before = runtime.audit_config
    if services.detector is None or (before is not None and before.detections == gw.audit.detections
                                     and before.responses == gw.audit.responses):
        return
    from bastion.audit.detect import Detector

    detector = Detector.from_config(gw.audit, services.audit, services.blocks,
                                    runtime.config_path.parent)
    detector.share(services.state)
    services.detector = detector
    if runtime.gateway is not None:
        runtime.gateway.detector = detector
    runtime.audit_config = gw.audit


def check_routes(current: Callable[[], GatewayConfig]) -> dict[tuple[str, str], Any]:
    """`POST /config/check` with `{"gateway": {...}}` (what `bastion validate --against` sends): 200 when a
    reload would apply that gateway section live, 409 with the refusal when it needs a restart."""

    async def check(ex: Any, body: bytes) -> None:
        try:
            doc = orjson.loads(body)
            candidate = GatewayConfig.model_validate(doc["gateway"])
        except (orjson.JSONDecodeError, pydantic.ValidationError, KeyError, TypeError):
            return ex.problem(400, "Send {\"gateway\": <the gateway section>}.", "")  # type: ignore[no-any-return]
        refusal = restart_needed(current(), candidate)
        from bastion.server.swap import swapped

        answer = {"applies_live": refusal is None, "message": refusal or "a reload applies this config live",
                  "swaps": swapped(current(), candidate) if refusal is None else []}
        ex.respond(200 if refusal is None else 409, [("content-type", "application/json"),
                                                     ("cache-control", "no-store")], orjson.dumps(answer))

    return {("POST", "/config/check"): check}
