"""The CLI verbs that are more than one call: validate, explain, reload, keys."""

from __future__ import annotations

import json
import math
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from bastion.compile import CompiledRoute, compile_config
from bastion.config.loader import ConfigError, load_config
from bastion.config.models import SECTIONS


def validate(path: str) -> int:
    try:
        compiled = compile_config(load_config(path))
    except ConfigError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        errors = sum(1 for d in exc.diagnostics if d.severity == "error")
        print(f"{path}: invalid ({errors} error(s))", file=sys.stderr)
        return 1
    for diagnostic in compiled.warnings:
        print(diagnostic, file=sys.stderr)
    print(f"{path}: valid ({len(compiled.routes)} routes, config hash {compiled.config_hash})")
    return 0


def _iso(ts: float) -> str:
    return "never" if math.isinf(ts) else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def route_policy(route: CompiledRoute, authz_shared: Any = None) -> dict[str, Any]:
    """The effective policy of a route now, each control with its value and source.

    With the authorisation layer's shared object (from a compile that built stages), also the route's
    authorisation requirements, one line each.
    """
    plan = route.plans[0]
    info = route.info
    controls: dict[str, Any] = {}
    for section in SECTIONS:
        policy = getattr(plan.policy, section)
        waived = dict(plan.waived).get(section)
        for name, value in policy.model_dump(mode="json").items():
            control = f"{section}.{name}"
            source = info.sources.get(control) or info.sources.get(section) or f"class:{info.klass}"
            entry: dict[str, Any] = {"value": value, "source": source}
            if waived:
                entry = {"value": "waived", "source": f"exception:{waived}"}
            controls[control] = entry
    from bastion.stages import authz
    from bastion.stages.input.crs import check as crs

    return {
        "authorization": authz.explain(plan.policy.authz, info, authz_shared) if authz_shared else [],
        "inspection": crs.explain(plan.policy.input.crs),
        "route": info.route_id, "api": info.api, "class": info.klass, "path": info.path,
        "methods": sorted(info.methods), "administrative": route.admin,
        "upstream": f"{route.upstream.scheme}://{route.upstream.authority}{route.upstream.path_prefix}",
        "exceptions": [{"id": e, "expires": _iso(plan.valid_until)} for e in plan.exceptions],
        "policy_changes_at": _iso(plan.valid_until),
        "controls": controls,
    }


def explain(path: str, selector: str | None, *, as_json: bool = False) -> int:
    from bastion.stages import authz

    try:
        compiled = compile_config(load_config(path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    routes = [r for r in compiled.routes if _selected(r, selector)]
    if selector and not routes:
        print(f"no route matches {selector!r}", file=sys.stderr)
        return 1
    docs = [route_policy(r, compiled.shared.get(authz.prepare)) for r in routes]
    if as_json:
        print(json.dumps(docs, indent=2))
        return 0
    for doc in docs:
        admin = "  [administrative]" if doc["administrative"] else ""
        print(f"{doc['route']}  {' '.join(doc['methods'])} {doc['path']}  class={doc['class']}{admin}")
        print(f"  upstream: {doc['upstream']}")
        for exc in doc["exceptions"]:
            print(f"  exception in force: {exc['id']} (this plan ends {exc['expires']})")
        for line in doc["authorization"]:
            print(f"  authorisation: {line}")
        for line in doc["inspection"]:
            print(f"  inspection: {line}")
        for control, entry in doc["controls"].items():
            print(f"  {control:34} {json.dumps(entry['value']):28} <- {entry['source']}")
        print()
    return 0


def _selected(route: CompiledRoute, selector: str | None) -> bool:
    if not selector:
        return True
    info = route.info
    return selector in (info.route_id, info.api, info.path, info.route)


def admin_call(path: str, admin: str | None, endpoint: str, method: str = "GET",
               doc: dict[str, Any] | None = None) -> int:
    """Call the running gateway's admin API and print its JSON answer. The bearer token, when the admin API
    requires one, comes from $BASTION_ADMIN_TOKEN (never from the command line, where `ps` shows it)."""
    import os

    if admin is None:
        try:
            cfg = load_config(path).model
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        scheme = "https" if cfg.gateway.admin.tls else "http"
        admin = f"{scheme}://{cfg.gateway.admin.address}:{cfg.gateway.admin.port}"
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("BASTION_ADMIN_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(doc).encode() if doc is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(admin.rstrip("/") + endpoint, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach the admin listener at {admin}: {exc}", file=sys.stderr)
        return 1


def reload(path: str, admin: str | None) -> int:
    return admin_call(path, admin, "/reload", "POST")


def blocks(path: str, admin: str | None, action: str, kind: str | None, key: str | None,
           seconds: float | None) -> int:
    if action == "list":
        return admin_call(path, admin, "/blocks")
    if action == "lift":
        return admin_call(path, admin, "/blocks/lift", "POST", {"kind": kind, "key": key})
    return admin_call(path, admin, "/blocks", "POST", {"kind": kind, "key": key, "seconds": seconds})


def revocations(path: str, admin: str | None, action: str, kind: str | None, value: str | None,
                seconds: float | None) -> int:
    if action == "list":
        return admin_call(path, admin, "/revocations")
    if action == "lift":
        return admin_call(path, admin, "/revocations/lift", "POST", {"kind": kind, "value": value})
    return admin_call(path, admin, "/revocations", "POST", {"kind": kind, "value": value, "seconds": seconds})


def new_key(consumer: str) -> int:
    from bastion.stages.identity import new_api_key

    key, line = new_api_key(consumer)
    print(f"API key for {consumer} (shown once, store it now):\n  {key}\n")
    print(f"Add to the consumer's credentials:\n  {line}")
    return 0
