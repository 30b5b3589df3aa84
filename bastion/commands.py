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


def validate(path: str, against: str | None = None) -> int:
    """Validate the config; with `against` (`running` = the admin URL in the config, or a URL) also ask the
    running gateway whether a reload would apply it live or needs a restart (exit 1 then)."""
    from bastion.config.files import missing_files

    try:
        loaded = load_config(path)
        missing = missing_files(loaded)  # certificates, keys, CA bundles, OpenAPI and JWKS files, ...
        if missing:
            raise ConfigError(missing)
        compiled = compile_config(loaded)
    except ConfigError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        errors = sum(1 for d in exc.diagnostics if d.severity == "error")
        print(f"{path}: invalid ({errors} error(s))", file=sys.stderr)
        return 1
    for diagnostic in compiled.warnings:
        print(diagnostic, file=sys.stderr)
    print(f"{path}: valid ({len(compiled.routes)} routes, config hash {compiled.config_hash})")
    if against is None:
        return 0
    gateway = compiled.config.model.gateway.model_dump(mode="json")
    return admin_call(path, None if against == "running" else against, "/config/check", "POST",
                      {"gateway": gateway})


def check_files(path: str) -> int:
    """1 (with each missing file at its line) when the config names a file that is not there, else 0."""
    from bastion.config.files import missing_files

    try:
        missing = missing_files(load_config(path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for diagnostic in missing:
        print(diagnostic, file=sys.stderr)
    return 1 if missing else 0


def _iso(ts: float) -> str:
    return "never" if math.isinf(ts) else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def route_policy(route: CompiledRoute, authz_shared: Any = None, *, now: float) -> dict[str, Any]:
    """The effective policy of a route at `now` (the plan the data plane enforces then), each control with its
    value and source.

    With the authorisation layer's shared object (from a compile that built stages), also the route's
    authorisation requirements, one line each.
    """
    from bastion.posture.controls import plan_at

    plan = plan_at(route, now)
    info = route.info
    sources = plan_sources(route, plan)
    controls: dict[str, Any] = {}
    for section in SECTIONS:
        policy = getattr(plan.policy, section)
        waived = dict(plan.waived).get(section)
        for name, value in policy.model_dump(mode="json").items():
            control = f"{section}.{name}"
            source = sources.get(control) or sources.get(section) or f"class:{info.klass}"
            entry: dict[str, Any] = {"value": value, "source": source}
            if waived:
                entry = {"value": "waived", "source": f"exception:{waived}"}
            controls[control] = entry
    from bastion.stages import authz

    return {
        "authorization": authz.explain(plan.policy.authz, info, authz_shared) if authz_shared else [],
        "route": info.route_id, "api": info.api, "class": info.klass, "path": info.path,
        "methods": sorted(info.methods), "administrative": route.admin,
        "upstream": f"{route.upstream.scheme}://{route.upstream.authority}{route.upstream.path_prefix}",
        "exceptions": [{"id": e, "expires": _iso(plan.valid_until)} for e in plan.exceptions],
        "policy_changes_at": _iso(plan.valid_until),
        "controls": controls,
    }


def plan_sources(route: CompiledRoute, plan: Any) -> dict[str, str]:
    """Where each control of `plan` comes from (a plan built before `Plan.info` existed: the route's first)."""
    return (plan.info or route.info).sources


def explain(path: str, selector: str | None, *, as_json: bool = False, at: float | None = None) -> int:
    from bastion.stages import authz

    try:
        compiled = compile_config(load_config(path), now=at)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    routes = [r for r in compiled.routes if _selected(r, selector)]
    if selector and not routes:
        print(f"no route matches {selector!r}", file=sys.stderr)
        return 1
    shared: dict[Any, Any] = compiled.shared  # keyed by each layer's prepare function
    docs = [route_policy(r, shared.get(authz.prepare), now=compiled.loaded_at) for r in routes]
    if as_json:
        print(json.dumps(docs, indent=2))
        return 0
    for doc in docs:
        admin = "  [administrative]" if doc["administrative"] else ""
        print(f"{doc['route']}  {' '.join(doc['methods'])} {doc['path']}  class={doc['class']}{admin}")
        print(f"  upstream: {doc['upstream']}")
        for exception in doc["exceptions"]:
            print(f"  exception in force: {exception['id']} (this plan ends {exception['expires']})")
        for line in doc["authorization"]:
            print(f"  authorisation: {line}")
        for control, entry in doc["controls"].items():
            print(f"  {control:34} {json.dumps(entry['value']):28} <- {entry['source']}")
        print()
    return 0


def _selected(route: CompiledRoute, selector: str | None) -> bool:
    if not selector:
        return True
    info = route.info
    return selector in (info.route_id, info.api, info.path, info.route)


def _admin_url(path: str, admin: str | None) -> str:
    """The admin listener's URL: given, or from the config (raises ConfigError)."""
    if admin is not None:
        return admin
    cfg = load_config(path).model
    scheme = "https" if cfg.gateway.admin.tls else "http"
    return f"{scheme}://{cfg.gateway.admin.address}:{cfg.gateway.admin.port}"


def admin_call(path: str, admin: str | None, endpoint: str, method: str = "GET",
               doc: dict[str, Any] | None = None) -> int:
    """Call the running gateway's admin API and print its JSON answer. The bearer token, when the admin API
    requires one, comes from $BASTION_ADMIN_TOKEN (never from the command line, where `ps` shows it)."""
    import os

    try:
        admin = _admin_url(path, admin)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
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
    """Reload the running gateway, which re-reads the file it was started with: refuse when `path` is another
    file, rather than report a reload of something else as success."""
    import contextlib
    import io
    from pathlib import Path

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = admin_call(path, admin, "/config")
    if status != 0:
        return status
    running = json.loads(buffer.getvalue() or "{}").get("config_file")
    if running and Path(running).resolve() != Path(path).resolve():
        print(f"bastion reload: the gateway serves {running}, not {path}; a reload re-reads the file it was "
              f"started with. Edit {running} (or copy {path} over it), or restart with -c {path}", file=sys.stderr)
        return 1
    return admin_call(path, admin, "/reload", "POST")


def stop(path: str, admin: str | None, timeout: float) -> int:
    """`bastion stop`: SIGTERM to the gateway whose admin listener the config names (on this host), then wait
    until it has drained and exited. The pid comes from `/config` (the supervisor's with workers)."""
    import io
    import os
    import signal
    import time
    from contextlib import redirect_stdout

    answer = io.StringIO()
    with redirect_stdout(answer):
        if admin_call(path, admin, "/config") != 0:
            return 1
    pid = int(json.loads(answer.getvalue())["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"no gateway process {pid} on this host", file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            print(f"bastion (pid {pid}) drained and stopped")
            return 0
        time.sleep(0.1)
    print(f"bastion (pid {pid}) still running after {timeout:g}s", file=sys.stderr)
    return 1


def _running(pid: int) -> bool:
    """True while `pid` exists and has not exited (an exited child its parent has not reaped yet is done)."""
    import os

    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


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
