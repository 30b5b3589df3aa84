"""`bastion inventory`: every declared API and route with who calls it and when it was last called, routes idle
for too long (decommissioning review), and the undeclared paths clients still call (shadow and zombie
endpoints), folded into path templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bastion.compile import CompiledGateway
from bastion.posture.auditlog import RequestEvent
from bastion.posture.report import DAY, iso

UNDECLARED_REASONS = frozenset({"unknown_route", "method_not_allowed"})
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NUMBER = re.compile(r"^\d+$")
_HEX = re.compile(r"^(?=.*\d)[0-9a-fA-F]{8,}$")
MAX_CALLERS = 20
# Memory while reading an audit log of any size: distinct callers tracked per route (past it `caller_count` is a
# lower bound), distinct shadow requests (past it they are counted in `shadow_dropped`), methods per entry.
MAX_TRACKED_CALLERS = 10_000
MAX_SHADOWS = 1_000
MAX_METHODS = 32


def template(path: str) -> str:
    """`/v1/users/42/orders/9f86d081884c` -> `/v1/users/{n}/orders/{hex}` (uuid segments -> `{uuid}`)."""
    out = []
    for segment in path.split("?", 1)[0].split("/"):
        if _NUMBER.match(segment):
            out.append("{n}")
        elif _UUID.match(segment):
            out.append("{uuid}")
        elif _HEX.match(segment):
            out.append("{hex}")
        else:
            out.append(segment)
    return "/".join(out) or "/"


@dataclass(slots=True)
class _Usage:
    count: int = 0
    denied: int = 0
    first: float | None = None
    last: float | None = None
    callers: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)

    def add(self, event: RequestEvent, caller: str | None) -> None:
        self.count += 1
        self.denied += event.decision == "deny"
        self.first = event.time if self.first is None else min(self.first, event.time)
        self.last = event.time if self.last is None else max(self.last, event.time)
        if caller and len(self.callers) < MAX_TRACKED_CALLERS:
            self.callers.add(caller)
        if event.method and len(self.methods) < MAX_METHODS:
            self.methods.add(event.method)


def build(compiled: CompiledGateway, events: Iterable[RequestEvent], now: float, idle_days: int = 90,
          ) -> dict[str, Any]:
    """The inventory as a JSON-ready dict."""
    usage: dict[str, _Usage] = {}
    shadow: dict[str, _Usage] = {}
    shadow_dropped = 0
    first_event: float | None = None
    for event in events:
        if event.probe:
            continue
        first_event = event.time if first_event is None else min(first_event, event.time)
        if event.decision == "deny" and event.reason in UNDECLARED_REASONS:
            key = f"{event.method} {template(event.path)}" if event.reason == "unknown_route" else \
                f"{event.method} {template(event.path)} (undeclared method)"
            use = shadow.get(key)
            if use is None:
                if len(shadow) >= MAX_SHADOWS:
                    shadow_dropped += 1
                    continue
                use = shadow[key] = _Usage()
            use.add(event, event.caller or event.client_ip)
        elif event.api and event.route:
            usage.setdefault(f"{event.api}/{event.route}", _Usage()).add(event, event.caller or event.client_ip)
    cfg = compiled.config.model
    owners = {api.name: api.owner for api in cfg.apis}
    cutoff = now - idle_days * DAY
    routes: list[dict[str, Any]] = []
    for route in compiled.routes:
        info = route.info
        use = usage.get(info.route_id, _Usage())
        idle = use.last is None or use.last < cutoff
        routes.append({
            "route": info.route_id, "api": info.api, "owner": owners.get(info.api), "class": info.klass,
            "methods": sorted(info.methods), "path": info.path, "requests": use.count, "denied": use.denied,
            "consumers": sorted(use.callers)[:MAX_CALLERS], "consumer_count": len(use.callers),
            "last_request": iso(use.last) if use.last is not None else None,
            "idle": idle,
        })
    apis = []
    for api in cfg.apis:
        mine = [r for r in routes if r["api"] == api.name]
        last = max((r["last_request"] for r in mine if r["last_request"]), default=None)
        apis.append({"name": api.name, "owner": api.owner, "class": api.klass, "routes": len(mine),
                     "idle_routes": sum(r["idle"] for r in mine), "last_request": last,
                     "consumers": sorted({c for r in mine for c in r["consumers"]})})
    shadows = [{"request": key, "count": use.count, "first_seen": iso(use.first or 0), "last_seen": iso(use.last or 0),
                "callers": sorted(use.callers)[:MAX_CALLERS], "caller_count": len(use.callers)}
               for key, use in sorted(shadow.items(), key=lambda kv: (-kv[1].count, kv[0]))]
    return {"kind": "bastion.inventory", "version": 1, "generated": iso(now), "config_hash": compiled.config_hash,
            "idle_days": idle_days, "audit_from": iso(first_event) if first_event is not None else None,
            "apis": apis, "routes": routes, "idle_routes": [r["route"] for r in routes if r["idle"]],
            "shadow": shadows, "shadow_dropped": shadow_dropped}


def text(doc: dict[str, Any]) -> str:
    """Human-readable inventory."""
    lines = [f"Inventory (config {doc['config_hash']}, audit from {doc['audit_from'] or 'no events'})", ""]
    for api in doc["apis"]:
        lines.append(f"{api['name']}  class={api['class']}  owner={api['owner']}  last request: "
                     f"{api['last_request'] or 'never'}")
        for r in (r for r in doc["routes"] if r["api"] == api["name"]):
            flag = f"  [no traffic for {doc['idle_days']} days: review for decommissioning]" if r["idle"] else ""
            consumers = ", ".join(r["consumers"]) or "-"
            lines.append(f"  {r['route']:32} {' '.join(r['methods']):8} {r['path']:28} {r['requests']:>7} req  "
                         f"last {r['last_request'] or 'never'}  consumers: {consumers}{flag}")
        lines.append("")
    lines.append("Undeclared paths still called (shadow/zombie endpoints):" if doc["shadow"] else
                 "No requests to undeclared paths.")
    for s in doc["shadow"]:
        lines.append(f"  {s['request']:48} {s['count']:>6}x  {s['first_seen']} .. {s['last_seen']}  "
                     f"callers: {', '.join(s['callers'])}")
    return "\n".join(lines)
