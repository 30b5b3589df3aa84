"""`bastion report`: posture of every route from the config, the clock, and optionally audit events and the
last probe, as one JSON document (rendered to Markdown or HTML by `render.py`).

Baseline coverage is the share of routes whose effective policy is their class baseline (or stricter) with no
exception relaxing any control right now.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bastion.compile import CompiledGateway, CompiledRoute
from bastion.config.include import api_sources
from bastion.config.models import ExceptionConfig
from bastion.posture import owasp
from bastion.posture.auditlog import RequestEvent
from bastion.posture.controls import demands, plan_at
from bastion.posture.policy import route_policy
from bastion.posture.transport import annotate, gateway_transport

EXPIRY_WARNING_DAYS = 14
MAX_HOURS = 168
DAY = 86400.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def exception_doc(exc: ExceptionConfig, now: float) -> dict[str, Any]:
    created, expires = exc.created.timestamp(), exc.expires.timestamp()
    state = "expired" if expires <= now else ("active" if created <= now else "scheduled")
    return {
        "id": exc.id, "api": exc.target.api, "route": exc.target.route, "controls": list(exc.controls),
        "owner": exc.owner, "reason": exc.reason, "evidence": exc.evidence, "created": iso(created),
        "expires": iso(expires), "state": state,
        "days_to_expiry": math.floor((expires - now) / DAY) if state != "expired" else 0,
        "expires_soon": state == "active" and expires - now <= EXPIRY_WARNING_DAYS * DAY,
    }


def route_doc(route: CompiledRoute, owner: str | None, exceptions: list[dict[str, Any]],
              probe: dict[str, list[dict[str, Any]]], now: float) -> dict[str, Any]:
    plan = plan_at(route, now)  # what the data plane enforces at `now`, not what it enforced at load
    need = demands(route, plan)
    credited, why = owasp.credit(route, plan)  # only controls in force on this route at `now`
    policy = route_policy(route, now=now)
    info = route.info
    relaxed = sorted({c for c, e in policy["controls"].items() if str(e["source"]).startswith("exception:")})
    mine = [e for e in exceptions if e["api"] == info.api and e["route"] in (None, info.route)]
    results = probe.get(info.route_id, [])
    return {
        "route": info.route_id, "api": info.api, "name": info.route, "class": info.klass, "owner": owner,
        "path": info.path, "methods": sorted(info.methods), "administrative": route.admin,
        "controls": policy["controls"],
        "inspection": policy["inspection"],  # the CRS rule set version and file hash, when the route runs it
        "meets_baseline": not relaxed, "relaxed_controls": relaxed,
        "exceptions": [e for e in mine if e["state"] == "active"],
        "expired_exceptions": [e for e in mine if e["state"] == "expired"],
        "gaps": {
            "no_scopes": not need.scopes,
            "no_owner_rule": bool(info.path_params) and not need.owner_rule,
            "no_rate_limit": not need.rate_limits,
        },
        "owasp": credited, "owasp_why": why,
        "probe": {"pass": sum(r["result"] == "pass" for r in results),
                  "fail": sum(r["result"] == "fail" for r in results),
                  "skip": sum(r["result"] == "skip" for r in results),
                  "failures": [r for r in results if r["result"] == "fail"]} if probe else None,
    }


def denials(events: Iterable[RequestEvent]) -> dict[str, Any]:
    by_control: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    by_hour: dict[str, Counter[str]] = {}
    first = last = None
    total = probes = 0
    for event in events:
        first = event.time if first is None else min(first, event.time)
        last = event.time if last is None else max(last, event.time)
        if event.probe:  # the probe's own attacks are not denials of real callers
            probes += 1
            continue
        total += 1
        if event.decision == "deny":
            by_control[event.control or "unknown"] += 1
            by_reason[event.reason or "unknown"] += 1
            hour = iso(event.time - event.time % 3600)
            by_hour.setdefault(hour, Counter())[event.reason or "unknown"] += 1
    return {"requests": total, "probe_requests": probes, "denied": sum(by_control.values()),
            "from": iso(first) if first is not None else None, "to": iso(last) if last is not None else None,
            "by_control": dict(by_control.most_common()), "by_reason": dict(by_reason.most_common()),
            # the most recent hours only: a long audit file must not make the page unbounded
            "by_hour": {h: dict(by_hour[h]) for h in sorted(by_hour)[-MAX_HOURS:]}}


def build(compiled: CompiledGateway, now: float, *, events: Iterable[RequestEvent] | None = None,
          probe: dict[str, Any] | None = None, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The posture report as a JSON-ready dict."""
    cfg = compiled.config.model
    owners = {api.name: api.owner for api in cfg.apis}
    exceptions = [exception_doc(e, now) for e in cfg.exceptions]
    by_route: dict[str, list[dict[str, Any]]] = {}
    for result in (probe or {}).get("results", []):
        by_route.setdefault(result["route"], []).append(result)
    routes = [route_doc(r, owners.get(r.info.api), exceptions, by_route if probe else {}, now)
              for r in compiled.routes]
    annotate(routes, compiled, now)  # TLS policy, revocation and flows per route; API6 only where a flow applies
    defined_in = api_sources(compiled.config)  # which file (a config may be a directory of them)
    for route in routes:
        route["source"] = defined_in.get(route["api"], "")
    apis = []
    for api in cfg.apis:
        mine = [r for r in routes if r["api"] == api.name]
        if not mine:
            continue
        apis.append({"name": api.name, "owner": api.owner, "class": api.klass, "routes": len(mine),
                     "meeting_baseline": sum(r["meets_baseline"] for r in mine),
                     "coverage": _pct(sum(r["meets_baseline"] for r in mine), len(mine))})
    active = [e for e in exceptions if e["state"] == "active"]
    kpis: dict[str, Any] = {
        "routes": len(routes),
        "routes_meeting_baseline": sum(r["meets_baseline"] for r in routes),
        "baseline_coverage": _pct(sum(r["meets_baseline"] for r in routes), len(routes)),
        "active_exceptions": len(active),
        "exceptions_expiring_14d": sum(e["expires_soon"] for e in active),
        "expired_exceptions": sum(e["state"] == "expired" for e in exceptions),
        "routes_without_scopes": sum(r["gaps"]["no_scopes"] for r in routes),
        "routes_without_owner_rule": sum(r["gaps"]["no_owner_rule"] for r in routes),
        "routes_without_rate_limit": sum(r["gaps"]["no_rate_limit"] for r in routes),
    }
    doc: dict[str, Any] = {
        "kind": "bastion.report", "version": 1, "generated": iso(now), "config_hash": compiled.config_hash,
        "config_file": str(compiled.config.path), "kpis": kpis, "apis": apis, "routes": routes,
        "exceptions": exceptions, "owasp_categories": owasp.CATEGORIES,
        "warnings": [str(d) for d in compiled.warnings],
    }
    doc.update(gateway_transport(cfg, now))  # listeners' TLS, revocation sources and CRL states, flows
    if events is not None:
        doc["denials"] = denials(events)
        kpis["denied_requests"] = doc["denials"]["denied"]
    if probe is not None:
        doc["probe"] = {"target": probe.get("target"), "time": iso(float(probe.get("time", now))),
                        "config_hash": probe.get("config_hash"), "summary": probe.get("summary"),
                        "identity": probe.get("identity"),  # who the probe was: a registered key, a file, none
                        "stale": probe.get("config_hash") != compiled.config_hash}
        kpis["probe_failures"] = (probe.get("summary") or {}).get("fail", 0)
    if previous is not None:
        doc["trend"] = trend(kpis, previous)
    return doc


def trend(kpis: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """Each numeric KPI's change since the previous report."""
    before = previous.get("kpis") or {}
    changes = {}
    for name, value in kpis.items():
        old = before.get(name)
        if isinstance(value, int | float) and isinstance(old, int | float):
            changes[name] = {"previous": old, "current": value, "delta": round(value - old, 2)}
    return {"previous_generated": previous.get("generated"), "previous_config_hash": previous.get("config_hash"),
            "kpis": changes}


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 100.0
