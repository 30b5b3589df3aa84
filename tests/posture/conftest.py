"""The demo (its config, identity provider and upstream) with a probe identity registered, served in-process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bastion.demo.idp import IdpServer, start_idp
from bastion.demo.run import render_config
from bastion.demo.upstream import start_upstream
from bastion.posture.tokens import ProbeIdentityConfig, new_probe_key
from bastion.server.app import Runtime

PROBE_ISSUER = "urn:bastion:probe"


def load_doc(text: str) -> Any:
    """A config document as plain data (ruamel, the project's YAML library)."""
    return YAML(typ="safe").load(text)


def dump_doc(doc: Any) -> str:
    """Plain data as config text: JSON is YAML, and timestamps become ISO 8601 strings."""
    return json.dumps(doc, indent=1, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


@dataclass
class Demo:
    config: Path  # what the gateway runs
    port: int
    admin_port: int
    idp: IdpServer
    identity: ProbeIdentityConfig
    runtime: Runtime

    @property
    def target(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def demo_config(directory: Path, issuer: str, upstream: str, mutate: Callable[[dict[str, Any]], None] | None = None,
                name: str = "bastion.yaml", now: datetime | None = None) -> tuple[Path, ProbeIdentityConfig]:
    """The demo config with the probe provider added (as an operator would), optionally weakened; its exception
    is created at `now` (the wall clock unless a test injects an instant)."""
    rendered = render_config(directory, 0, issuer, upstream, now or datetime.now(UTC), 0)
    doc = load_doc(rendered.read_text())
    key, jwks = new_probe_key(directory, kid="probe-1")
    doc["providers"]["jwt"] = [p for p in doc["providers"]["jwt"] if p["name"] != "bastion-probe"]  # the demo's
    doc["providers"]["jwt"].append({"name": "bastion-probe", "issuer": PROBE_ISSUER,
                                    "audiences": ["api://demo"], "algorithms": ["ES256"],
                                    "jwks_file": str(jwks)})
    if mutate is not None:
        mutate(doc)
    path = directory / name
    path.write_text(dump_doc(doc))
    if path != rendered:
        rendered.unlink()
    return path, ProbeIdentityConfig(provider="bastion-probe", key=key)


def with_owner_routes(doc: dict[str, Any]) -> None:
    """Two owner-protected routes (OWASP API1): an order id in the path bound to a list claim, a customer id in
    the query bound to a nested claim."""
    doc["apis"][0]["routes"].append(
        {"name": "get-invoice", "path": "/{order_id}/invoice", "methods": ["GET"],
         "policy": {"authz": {"scopes": ["orders:read"], "owner": [{"from": "path.order_id", "in": "claim:orders"}]}}})
    doc["apis"][1]["routes"].append(
        {"name": "list-favourites", "path": "/favourites", "methods": ["GET"],
         "policy": {"authz": {"owner": {"from": "query.customer", "equals": "claim:ext.customer"}}}})


@asynccontextmanager
async def running_demo(directory: Path, mutate: Callable[[dict[str, Any]], None] | None = None) -> AsyncIterator[Demo]:
    idp = await start_idp("127.0.0.1", 0)
    upstream = await start_upstream("127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    directory.mkdir(parents=True, exist_ok=True)
    config, identity = demo_config(directory, idp.issuer, f"http://127.0.0.1:{up_port}", mutate)
    runtime = Runtime(config)
    await runtime.start()
    try:
        assert runtime.admin_bound is not None
        yield Demo(config, runtime.bound[0][1], runtime.admin_bound[1], idp, identity, runtime)
    finally:
        await runtime.stop(drain_timeout=1.0)
        upstream.close()
        await idp.close()


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    async with running_demo(tmp_path / "demo") as d:
        yield d


def audit_event(path: str, *, api: str | None = None, route: str | None = None, decision: str = "allow",
                reason: str | None = None, control: str | None = None, time: float = 0.0, ip: str = "10.0.0.1",
                caller: str | None = None, method: str = "GET") -> dict[str, Any]:
    """A request event shaped as bastion.audit.log.AuditLog.request() writes it."""
    policy = "allow"
    if decision == "deny":
        policy = "gateway/default-deny" if control == "gateway" else f"class:x/{api}/{route}/{control}"
    return {
        "class_uid": 6003, "time": int(time * 1000), "actor": {"user": {"uid": caller, "name": caller}},
        "src_endpoint": {"ip": ip}, "http_request": {"http_method": method, "url": {"path": path}},
        "policy": {"uid": policy},
        "unmapped": {"bastion": {
            "route": route, "api": api, "decision": decision, "reason": reason, "request_id": "r",
            "decisions": [{"control": control, "outcome": "deny"}] if decision == "deny" and control
            and control != "gateway" else []}},
    }
