"""The admin listener: health, readiness, metrics, running config and policies, reload, posture pages.

Loopback by default and on its own port: it is never reachable through the data-plane listeners. With
`gateway.admin.auth` every call but the open paths needs an admin credential, and every call is audited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from bastion.server.admin_routes import new_request_id, noted, request_id
from bastion.server.http1 import BodyMalformed, BodyTimeout, BodyTooLarge, Exchange

Json = dict[str, Any]
# Scrapes and probes are not "actions": auditing them would drown the actions that matter.
_UNAUDITED = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_BODY_BYTES = 1024 * 1024  # `gateway.admin.max_body_bytes` by default


@dataclass(slots=True)
class AdminBackend:
    """What the admin API reads and triggers, provided by the runtime (or the workers' supervisor)."""

    registry: CollectorRegistry
    ready: Callable[[], bool]
    info: Callable[[], Json]
    reload: Callable[[str], Awaitable[tuple[bool, str]]]
    compiled: Callable[[], Any] = lambda: None  # the CompiledGateway serving now
    events: Callable[[], Awaitable[list[Any]]] | None = None  # request events from the audit file, for posture
    blocks: Callable[[], Awaitable[list[Json]]] | None = None
    auth: Callable[[], Any] = lambda: None  # bastion.posture.admin_auth.AdminAuth, or None on loopback
    audit: Any = None
    extra_routes: dict[tuple[str, str], Callable[[Exchange, bytes], Awaitable[None]]] = field(default_factory=dict)
    before_scrape: Callable[[], None] = lambda: None  # e.g. move counts batched on the request path
    clock: Callable[[], float] = time.time  # the data plane's wall clock: evidence is computed at its instant
    # `/readyz` with reasons: `{"reasons": [...], ...}` (empty reasons = ready); without it, `ready()` decides
    readiness: Callable[[], Awaitable[Json]] | None = None
    # counts a refused admin request by reason (`bastion_decisions_total{control="admin", outcome="deny"}`)
    refused: Callable[[str], None] = lambda reason: None


class AdminApi:
    """Routes admin requests to the backend."""

    def __init__(self, backend: AdminBackend) -> None:
        self._b = backend
        self._probe: Json | None = None  # the last `bastion probe --publish` result: evidence on the dashboard

    async def handle(self, ex: Exchange) -> None:
        path = ex.target.split("?", 1)[0]
        new_request_id()  # this task's answers, whichever handler writes them, carry it
        limit = self._max_body_bytes()
        ex.limit_body(limit)
        try:
            body = await ex.read_body() if ex.has_body else b""
        except BodyTooLarge:
            self._b.refused("admin_body_too_large")
            self._audit(ex, path, "failure", reason="admin_body_too_large",
                        detail=f"request body over gateway.admin.max_body_bytes ({limit} bytes)")
            return ex.problem(413, None, request_id(), close=True)
        except (BodyTimeout, BodyMalformed):
            return ex.problem(400, None, request_id(), close=True)
        principal = "loopback"
        auth = self._b.auth()
        if auth is not None:
            decision = await auth.check(path, ex.header("authorization"), ex.peer_cert)
            if not decision.allow:
                self._audit(ex, path, "failure", reason=decision.reason)
                return ex.problem(decision.status, None, request_id(), decision.headers)
            principal = decision.principal or "unknown"
        ok = await self._route(ex, path, body)
        if path not in _UNAUDITED:
            self._audit(ex, path, "success" if ok else "failure", principal=principal, status=ex.status, **noted())

    def _max_body_bytes(self) -> int:
        """`gateway.admin.max_body_bytes` of the config serving now (the default before one is compiled)."""
        compiled = self._b.compiled()
        if compiled is None:
            return MAX_BODY_BYTES
        return int(compiled.config.model.gateway.admin.max_body_bytes)

    def _audit(self, ex: Exchange, path: str, outcome: str, **detail: Any) -> None:
        if self._b.audit is not None:
            self._b.audit.admin(f"admin.{ex.method} {path}", outcome, peer=ex.peer, **detail)

    async def _route(self, ex: Exchange, path: str, body: bytes) -> bool:
        method = ex.method
        read = method in ("GET", "HEAD")
        b = self._b
        if path == "/healthz" and read:
            return _json(ex, 200, {"status": "ok"})
        if path == "/readyz" and read:
            doc = await b.readiness() if b.readiness is not None else {"reasons": [] if b.ready() else ["not_ready"]}
            ready = not doc["reasons"]
            _json(ex, 200 if ready else 503, {"status": "ready" if ready else "not ready", **doc})
            return ready
        if path == "/metrics" and read:
            b.before_scrape()
            ex.respond(200, [("content-type", CONTENT_TYPE_LATEST), ("x-request-id", request_id())],
                       generate_latest(b.registry))
            return True
        if path == "/config" and read:
            return _json(ex, 200, b.info())
        if path == "/reload":
            if method != "POST":
                ex.problem(405, None, request_id(), [("allow", "POST")])
                return False
            ok, message = await b.reload(ex.peer)
            return _json(ex, 200 if ok else 422, {"reloaded": ok, "message": message, **b.info()})
        if path == "/probe" and method == "POST":  # `bastion probe --publish`: the last run, for the evidence
            from bastion.posture.probe import checked_probe

            try:
                self._probe = checked_probe(orjson.loads(body))
            except ValueError:  # orjson.JSONDecodeError is one too
                ex.problem(400, "Send the JSON result of `bastion probe --json`.", request_id())
                return False
            return _json(ex, 200, {"stored": True, "summary": self._probe["summary"]})
        handler = b.extra_routes.get((method, path))
        if handler is not None:
            await handler(ex, body)
            return ex.status < 400
        compiled = b.compiled()
        if compiled is not None and read:
            if path == "/policies":
                from bastion.posture.diff import effective_policies

                return _json(ex, 200, effective_policies(compiled, b.clock()))
            if path in ("/report", "/inventory") or path.startswith("/dashboard"):
                return await self._posture(ex, path, compiled)
        ex.problem(404, "Unknown admin endpoint.", request_id())
        return False

    async def _posture(self, ex: Exchange, path: str, compiled: Any) -> bool:
        from bastion.posture import dashboard, inventory, report

        events = await self._b.events() if self._b.events is not None else []
        now = self._b.clock()
        doc = report.build(compiled, now, events=events, probe=self._probe)
        if path == "/report":
            return _json(ex, 200, doc)
        inv = inventory.build(compiled, events, now)
        if path == "/inventory":
            return _json(ex, 200, inv)
        blocks = await self._b.blocks() if self._b.blocks is not None else []
        denied = [e for e in events if getattr(e, "decision", "") == "deny"][-dashboard.RECENT:]
        page = dashboard.render(path, dashboard.DashboardData(doc, inv, blocks, denied))
        if page is None:
            ex.problem(404, "Unknown dashboard page.", request_id())
            return False
        ex.respond(200, [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store"),
                         ("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'"),
                         ("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                         ("x-request-id", request_id())], page)
        return True


def _json(ex: Exchange, status: int, doc: Any) -> bool:
    ex.respond(status, [("content-type", "application/json"), ("cache-control", "no-store"),
                        ("x-request-id", request_id())],
               orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))
    return status < 400


async def read_events(path: Any) -> list[Any]:
    """Request events from an audit JSON-lines file, read off the event loop."""
    from bastion.posture.auditlog import ProbeMarks, read, requests
    from bastion.posture.tokens import PROBE_SUBJECT

    if path is None or not path.exists():
        return []
    marks = ProbeMarks.of([PROBE_SUBJECT])  # the probe's own attacks are evidence, not traffic
    return await asyncio.to_thread(lambda: list(requests(read(path), marks)))
