"""The CLI verbs that are more than one call: validate, explain, reload, keys."""

from __future__ import annotations

import json
import sys

from bastion.compile import CompiledRoute, compile_config
from bastion.config.include import api_sources
from bastion.config.loader import ConfigError, load_config
from bastion.posture.admin_client import admin_call
from bastion.posture.policy import route_policy


def validate(path: str, against: str | None = None) -> int:
    """Validate the config; with `against` (`running` = the admin URL in the config, or a URL) also ask the
    running gateway whether a reload would apply it live or needs a restart (exit 1 then)."""
    from bastion.server.reload_files import broken_files

    try:
        loaded = load_config(path)
        missing = broken_files(loaded)  # certificates, keys, CA bundles, OpenAPI and JWKS files: present, parseable
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
    from bastion.server.reload_files import broken_files

    try:
        missing = broken_files(load_config(path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for diagnostic in missing:
        print(diagnostic, file=sys.stderr)
    return 1 if missing else 0


def explain(path: str, selector: str | None, *, as_json: bool = False, at: float | None = None) -> int:

    try:
        compiled = compile_config(load_config(path), now=at)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    routes = [r for r in compiled.routes if _selected(r, selector)]
    if selector and not routes:
        print(f"no route matches {selector!r}", file=sys.stderr)
        return 1
    docs = [route_policy(r, compiled.shared.authz, now=compiled.loaded_at) for r in routes]
    defined_in = api_sources(compiled.config)  # which file of a config directory each route comes from
    for doc in docs:
        doc["source"] = defined_in.get(doc["api"], "")
    if as_json:
        print(json.dumps(docs, indent=2))
        return 0
    for doc in docs:
        admin = "  [administrative]" if doc["administrative"] else ""
        print(f"{doc['route']}  {' '.join(doc['methods'])} {doc['path']}  class={doc['class']}{admin}")
        print(f"  upstream: {doc['upstream']}")
        print(f"  defined in: {doc['source']}")
        for waiver in doc["exceptions"]:
            print(f"  exception in force: {waiver['id']} (this plan ends {waiver['expires']})")
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
    return _list_add_lift(path, admin, "/blocks", action, {"kind": kind, "key": key}, seconds)


def revocations(path: str, admin: str | None, action: str, kind: str | None, value: str | None,
                seconds: float | None) -> int:
    return _list_add_lift(path, admin, "/revocations", action, {"kind": kind, "value": value}, seconds)


def _list_add_lift(path: str, admin: str | None, collection: str, action: str, entry: dict[str, str | None],
                   seconds: float | None) -> int:
    """An admin API collection (`/blocks`, `/revocations`): list it, lift `entry`, or add `entry` for `seconds`."""
    if action == "list":
        return admin_call(path, admin, collection)
    if action == "lift":
        return admin_call(path, admin, f"{collection}/lift", "POST", entry)
    return admin_call(path, admin, collection, "POST", {**entry, "seconds": seconds})


def new_key(consumer: str) -> int:
    from bastion.stages.identity import new_api_key

    key, line = new_api_key(consumer)
    print(f"API key for {consumer} (shown once, store it now):\n  {key}\n")
    print(f"Add to the consumer's credentials:\n  {line}")
    return 0
