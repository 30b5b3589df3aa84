"""The admin listener: health, readiness, Prometheus metrics, running config, reload.

Loopback by default and on its own port: it is never reachable through the data-plane listeners.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from bastion.server.http1 import Exchange

Json = dict[str, Any]


class AdminApi:
    """Routes admin requests to the runtime's callbacks."""

    def __init__(self, *, registry: CollectorRegistry, ready: Callable[[], bool], info: Callable[[], Json],
                 reload: Callable[[str], Awaitable[tuple[bool, str]]]) -> None:
        self._registry = registry
        self._ready = ready
        self._info = info
        self._reload = reload

    async def handle(self, ex: Exchange) -> None:
        path = ex.target.split("?", 1)[0]
        method = ex.method
        if ex.has_body:
            await ex.read_body()  # admin bodies are small and ignored; the limit below bounds them
        if path == "/healthz" and method in ("GET", "HEAD"):
            return _json(ex, 200, {"status": "ok"})
        if path == "/readyz" and method in ("GET", "HEAD"):
            ready = self._ready()
            return _json(ex, 200 if ready else 503, {"status": "ready" if ready else "not ready"})
        if path == "/metrics" and method in ("GET", "HEAD"):
            body = generate_latest(self._registry)
            return ex.respond(200, [("content-type", CONTENT_TYPE_LATEST)], body)
        if path == "/config" and method in ("GET", "HEAD"):
            return _json(ex, 200, self._info())
        if path == "/reload":
            if method != "POST":
                return ex.problem(405, None, "", [("allow", "POST")])
            ok, message = await self._reload(ex.peer)
            return _json(ex, 200 if ok else 422, {"reloaded": ok, "message": message, **self._info()})
        return ex.problem(404, "Unknown admin endpoint.", "")


def _json(ex: Exchange, status: int, doc: Json) -> None:
    ex.respond(status, [("content-type", "application/json"), ("cache-control", "no-store")],
               orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
