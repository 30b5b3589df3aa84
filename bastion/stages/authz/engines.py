"""External policy engines: Open Policy Agent over its REST data API, and Cedar in-process (cedarpy).

Both see the same description of the request: who (identity, claims), what (method, route, path parameters,
query) and from where (client IP). Credentials never leave the gateway: OPA receives only the headers a route
names in `opa.headers`, and never `authorization`, `cookie` or API key headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import cedarpy
import orjson

from bastion.context import RequestContext
from bastion.stages.authz.cache import DecisionCache
from bastion.stages.authz.client import HttpClient
from bastion.stages.authz.conditions import identity_map
from bastion.stages.authz.config import CedarConfig, OpaConfig
from bastion.stages.base import RouteInfo

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


@dataclass(frozen=True, slots=True)
class EngineVerdict:
    """`allowed`, or why not; `unavailable` when the engine could not decide (timeout, error)."""

    allowed: bool
    log: str = ""
    unavailable: bool = False


def query_lists(query: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        out.setdefault(key, []).append(value)
    return out


def describe_request(ctx: RequestContext, route: RouteInfo, admin: bool, headers: tuple[str, ...]) -> dict[str, Any]:
    """The `input` document OPA receives (and the basis of Cedar's context)."""
    identity = ctx.identity
    ident: dict[str, Any] | None = None
    if identity is not None and identity.method != "anonymous":
        ident = identity_map(identity)
        ident["claims"] = identity.claims
    wanted = {k: v for k, v in ctx.headers if k in headers and k not in SECRET_HEADERS}
    return {
        "request": {"method": ctx.method, "path": ctx.path, "path_params": ctx.path_params,
                    "query": query_lists(ctx.query), "headers": wanted, "client_ip": ctx.client_ip},
        "route": {"api": route.api, "route": route.route, "class": route.klass, "template": route.path,
                  "administrative": admin},
        "identity": ident,
    }


class OpaClient:
    """`POST <url>/v1/data/<path>` with `{"input": ...}`; the answer `{"result": true | {"allow": ..}}`."""

    def __init__(self, config: OpaConfig, client: HttpClient, clock: Any) -> None:
        if config.url is None:
            raise ValueError("opa.url is not set")
        self.config = config
        self.endpoint = config.url.rstrip("/") + "/v1/data/" + config.path
        self._client = client
        self.cache: DecisionCache[tuple[bool, str]] = DecisionCache(config.cache_ttl, config.cache_size, clock)
        self.available = True  # False while OPA does not answer: /readyz reports it (routes with on_error: closed)

    async def probe(self) -> None:
        """One `GET /health` (OPA's health API) within the timeout, so readiness follows OPA without traffic."""
        assert self.config.url is not None
        try:
            answer = await self._client.request("GET", self.config.url.rstrip("/") + "/health",
                                                timeout=self.config.timeout)
        except Exception:  # timeout, refused: not available
            self.available = False
            return
        self.available = answer.status == 200

    async def decide(self, document: dict[str, Any]) -> EngineVerdict:
        body = orjson.dumps({"input": document}, option=orjson.OPT_SORT_KEYS)

        async def fetch() -> tuple[bool, str]:
            answer = await self._client.request("POST", self.endpoint, body=body, timeout=self.config.timeout,
                                                max_bytes=self.config.max_response)
            if answer.status != 200:
                raise ValueError(f"OPA answered {answer.status}")
            try:
                doc = orjson.loads(answer.body)
            except orjson.JSONDecodeError:
                raise ValueError("OPA's answer is not JSON") from None
            if not isinstance(doc, dict) or "result" not in doc:
                return False, f"{self.config.path} is undefined for this input"
            result = doc["result"]
            if isinstance(result, bool):
                return result, "" if result else f"{self.config.path} = false"
            if isinstance(result, dict) and isinstance(result.get("allow"), bool):
                reason = result.get("reason")
                why = f"{self.config.path}: {reason}" if isinstance(reason, str) else f"{self.config.path}.allow"
                return result["allow"], why if not result["allow"] else ""
            return False, f"{self.config.path} is neither a boolean nor {{allow: boolean}}"

        try:
            (allowed, why), _ = await self.cache.get(body, fetch)
        except Exception as exc:  # timeout, refused, 500, garbage: no decision
            self.available = False
            return EngineVerdict(False, f"OPA {self.endpoint}: {exc}", unavailable=True)
        self.available = True
        return EngineVerdict(allowed, why)


def _cedar_value(value: Any) -> Any:
    """JSON claims as Cedar values: strings, booleans, 64-bit integers, sets and records; the rest dropped."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, list):
        items = [_cedar_value(v) for v in value]
        return [v for v in items if v is not None]
    if isinstance(value, dict):
        out = {str(k): _cedar_value(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None}
    return None


class CedarEngine:
    """A route's Cedar policy set, parsed once; `decide(ctx)` builds the entities of one request."""

    def __init__(self, config: CedarConfig, route: RouteInfo, admin: bool, loaded: tuple[Any, dict[str, str]]) -> None:
        self.config = config
        self.route = route
        self.admin = admin
        self.policies, self.names = loaded

    @staticmethod
    def load(path: Path) -> tuple[Any, dict[str, str]]:
        """The parsed policy set, and each policy's `@id("...")` annotation by Cedar's own id (`policy0`)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"authz.cedar.policies: cannot read {path}: {exc.strerror}") from None
        try:
            policies = cedarpy.PolicySet.from_str(text)
            described = orjson.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            raise ValueError(f"authz.cedar.policies: {path} does not parse: {exc}") from None
        names = {pid: p["annotations"]["id"] for pid, p in described.get("staticPolicies", {}).items()
                 if isinstance(p.get("annotations", {}).get("id"), str)}
        return policies, names

    def decide(self, ctx: RequestContext) -> EngineVerdict:
        identity = ctx.identity
        anonymous = identity is None or identity.method == "anonymous"
        principal_id = "anonymous" if anonymous else (identity.subject or identity.consumer or "unknown")  # type: ignore[union-attr]
        principal = {"type": self.config.principal_type, "id": principal_id}
        roles = sorted(identity.roles) if identity is not None else []
        attrs: dict[str, Any] = identity_map(None if anonymous else identity)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        attrs["claims"] = _cedar_value(identity.claims) if identity is not None else {}
        resource = {"type": "Route", "id": self.route.route_id}
        entities: list[dict[str, Any]] = [
            {"uid": principal, "attrs": attrs, "parents": [{"type": "Role", "id": r} for r in roles]},
            *({"uid": {"type": "Role", "id": r}, "attrs": {}, "parents": []} for r in roles),
            {"uid": resource, "parents": [], "attrs": {
                "api": self.route.api, "route": self.route.route, "class": self.route.klass,
                "template": self.route.path, "administrative": self.admin}},
        ]
        context = {"method": ctx.method, "path": ctx.path_params, "client_ip": ctx.client_ip,
                   "query": {k: v[0] for k, v in query_lists(ctx.query).items()}, "authenticated": not anonymous}
        request = {"principal": principal, "action": {"type": "Action", "id": ctx.method},
                   "resource": resource, "context": context}
        result = cedarpy.is_authorized(request, self.policies, entities)
        if result.allowed:
            return EngineVerdict(True)
        diag = result.diagnostics
        names = [self.names.get(r, r) for r in diag.reasons]
        why = "forbidden by " + ", ".join(names) if names else "no Cedar policy permits it"
        if diag.errors:
            why += "; errors: " + "; ".join(diag.errors)
        return EngineVerdict(False, why)
