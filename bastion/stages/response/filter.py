"""The response layer of one route, sans-IO: what to send for an upstream response, and whether to hold its body.

The server calls, for each request of the route:
- `preflight(ctx)` before the pipeline: a CORS preflight is answered here and never reaches the upstream;
- `head(ctx, status, headers, tls)` when the upstream's head arrives: a `ResponsePlan`;
- `body(ctx, status, plan.headers, body)` with the whole body, when the plan says `buffer`;
- `overflow(ctx, plan)` when a buffered body passes `plan.max_bytes`.

Each decision is appended to `ctx.records` (counted and audited like a stage's); nothing here does IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.context import ControlRecord, RequestContext
from bastion.http.headers import first_header, response_fields, response_headers
from bastion.http.problem import problem_body
from bastion.stages.base import RouteInfo, Services
from bastion.stages.response.config import ResponsePolicy
from bastion.stages.response.contract import ResponseContract
from bastion.stages.response.headers import Cors, HeaderSet

PROBLEM = "application/problem+json"
ERROR_DETAIL = "The upstream service failed to process the request."
WITHHELD_DETAIL = "The upstream response was withheld by the gateway."
# Headers a replaced answer keeps: the ones the gateway itself set, never the upstream's (Set-Cookie, ...).
_KEEP_ON_REPLACE = frozenset({
    "x-content-type-options", "x-frame-options", "referrer-policy", "strict-transport-security", "vary",
})


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """What to do with one upstream response.

    - `stream`: send `status` and `headers` now, then the upstream body as it arrives (framing is the server's).
    - `buffer`: hold the body, up to `max_bytes`, then send what `body()` returns. Past `max_bytes`, call
      `overflow()`: it answers 502 (`overflow == "block"`) or lets the response stream unfiltered.
    - `replace`: send `status`, `headers` and `body` instead; read and discard the upstream body.
    `headers` never holds framing or hop-by-hop fields; the server adds `x-request-id` and `traceparent`.
    """

    status: int
    headers: list[tuple[str, str]]
    action: Literal["stream", "buffer", "replace"] = "stream"
    max_bytes: int = 0
    overflow: Literal["block", "stream"] = "block"
    body: bytes = b""


@dataclass(slots=True)
class ResponseShared:
    """Built once per config load: compiled response contracts, shared by the routes of one operation."""

    contracts: dict[int, tuple[dict[str, Any], ResponseContract]] = field(default_factory=dict)

    def contract(self, operation: dict[str, Any]) -> ResponseContract:
        hit = self.contracts.get(id(operation))
        if hit is not None and hit[0] is operation:
            return hit[1]
        contract = ResponseContract(operation)
        self.contracts[id(operation)] = (operation, contract)
        return contract


class ResponseFilter:
    """The `response` controls of one route."""

    control = "response"

    def __init__(self, policy: ResponsePolicy, route: RouteInfo, shared: ResponseShared | None) -> None:
        self.policy = policy
        self.mode = policy.undeclared
        self.limit = policy.max_filter_bytes
        self.rewrite = policy.rewrite_errors
        self.error_detail = policy.error_detail or ERROR_DETAIL
        self.security = HeaderSet(policy.security_headers)
        self.cors = Cors(policy.cors, route.methods)
        contract = None
        if self.mode != "allow" and route.operation is not None:
            contract = (shared or ResponseShared()).contract(route.operation)
        self.contract = contract if contract else None  # None also when no response declares a JSON schema
        self.pid_undeclared = route.policy_id("response.undeclared")
        self.pid_limit = route.policy_id("response.max_filter_bytes")
        self.pid_errors = route.policy_id("response.rewrite_errors")
        self.pid_cors = route.policy_id("response.cors")

    @property
    def filters_bodies(self) -> bool:
        """Whether some response of this route may be buffered: the upstream request then must not ask for
        compressed bodies (the server drops `Accept-Encoding`), which could not be filtered."""
        return self.contract is not None

    # ---- CORS preflight ---------------------------------------------------------------------------------

    def preflight(self, ctx: RequestContext) -> tuple[int, list[tuple[str, str]]] | None:
        """Fetch §4.8: an OPTIONS request with `Origin` and `Access-Control-Request-Method`, on a route with
        CORS, is answered here (204 allowed, 403 refused). None: not a preflight, forward as usual."""
        if ctx.method != "OPTIONS" or not self.cors.enabled:
            return None
        origin, method = ctx.header("origin"), ctx.header("access-control-request-method")
        if origin is None or method is None:
            return None
        status, headers = self.cors.preflight(origin, method, ctx.header("access-control-request-headers"))
        allowed = status < 400
        ctx.records.append(ControlRecord("response.cors", "allow" if allowed else "deny", self.pid_cors,
                                         "cors_preflight" if allowed else "cors_preflight_refused"))
        if self.security.policy.nosniff:
            headers.append(("x-content-type-options", "nosniff"))
        return status, headers

    # ---- the response head ------------------------------------------------------------------------------

    def head(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]], tls: bool) -> ResponsePlan:
        """The headers to send for an upstream response head, and what to do with its body.

        `headers`: the upstream's, lower-case names, as received (Content-Length included: it lets a body
        that is too large to filter be decided before it is read)."""
        length, out = response_headers(headers)

        if status >= 500 and self.rewrite:
            ctx.records.append(ControlRecord("response.rewrite_errors", "allow", self.pid_errors,
                                             "response_error_rewritten"))
            kept = [(n, v) for n, v in out if n == "retry-after"]
            return self._replace(ctx, status, kept, tls, self.error_detail)

        action: Literal["stream", "buffer", "replace"] = "stream"
        validator = None
        if self.contract is not None and ctx.method != "HEAD" and status not in (204, 304) and status >= 200:
            validator = self.contract.validator(status, first_header(out, "content-type"))
        if validator is not None:
            encoding = first_header(out, "content-encoding")
            if encoding is not None and encoding.strip().lower() != "identity":
                if self.mode == "block":
                    return self._withhold(ctx, self.pid_undeclared, "response_encoded", tls)
                self._note(ctx, self.pid_undeclared, "response_unfiltered_encoded")
            elif length is not None and length > self.limit:
                if self.mode == "block":
                    return self._withhold(ctx, self.pid_limit, "response_too_large_to_filter", tls)
                self._note(ctx, self.pid_limit, "response_unfiltered_too_large")
            else:
                action = "buffer"
        self._decorate(ctx, out, tls)
        return ResponsePlan(status, out, action, self.limit, "block" if self.mode == "block" else "stream")

    def stream_fields(self, ctx: RequestContext, status: int, raw: list[tuple[bytes, bytes]],
                      tls: bool) -> tuple[int | None, bytes] | None:
        """`head` for the common case, on the parser's bytes: a response streamed with this route's headers
        (Content-Length and the serialised fields, as `response_fields`). None when the general `head` must
        decide (a contract to check, CORS, a 5xx to rewrite, upstream caching to weigh)."""
        if self.contract is not None or self.cors.enabled or (status >= 500 and self.rewrite):
            return None
        security = self.security
        identity = ctx.identity
        no_store = security.no_store and ((identity is not None and identity.method != "anonymous")
                                          or ctx.header("authorization") is not None)
        if no_store and security.keep_cache:
            return None
        forwarded = response_fields(raw, security.drop_no_store if no_store else security.drop, b"access-control-")
        if forwarded is None:
            return None
        length, fields = forwarded
        return length, fields + (security.serialised_no_store if no_store else security.serialised) + (
            security.serialised_hsts if tls else b"")

    def answer_headers(self, ctx: RequestContext, tls: bool) -> list[tuple[str, str]]:
        """Security and CORS headers for an answer the gateway makes itself (a denial's problem document), so
        HSTS and nosniff cover it and a browser can read a cross-origin 401/403/429. The problem helper sets
        its own `Cache-Control: no-store`."""
        headers: list[tuple[str, str]] = []
        self._decorate(ctx, headers, tls)
        return [(n, v) for n, v in headers if n != "cache-control"]

    # ---- a buffered body --------------------------------------------------------------------------------

    def body(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]],
             body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer for a buffered body: filtered, unchanged, or a 502 problem. `headers` is `plan.headers`."""
        validator = self.contract.validator(status, first_header(headers, "content-type")) if self.contract else None
        if validator is None or not body:
            return status, headers, body
        outcome = ResponseContract.filter(body, validator, strip=self.mode == "strip")
        if not outcome.reason:
            return status, headers, body
        if self.mode == "block" or outcome.reason == "response_unfilterable":
            ctx.records.append(ControlRecord("response.undeclared", "deny", self.pid_undeclared, outcome.reason))
            return self._problem_from(ctx, headers, 502, WITHHELD_DETAIL)
        self._note(ctx, self.pid_undeclared, outcome.reason)
        return status, headers, outcome.body if outcome.body is not None else body

    def overflow(self, ctx: RequestContext, plan: ResponsePlan) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """A buffered body passed `plan.max_bytes`: a 502 problem to send instead (`block`), or None: send
        `plan.status`/`plan.headers` and stream the held bytes and the rest unfiltered (counted)."""
        if plan.overflow == "block":
            ctx.records.append(ControlRecord("response.max_filter_bytes", "deny", self.pid_limit,
                                             "response_too_large_to_filter"))
            return self._problem_from(ctx, plan.headers, 502, WITHHELD_DETAIL)
        self._note(ctx, self.pid_limit, "response_unfiltered_too_large")
        return None

    # ---- helpers ----------------------------------------------------------------------------------------

    def _decorate(self, ctx: RequestContext, headers: list[tuple[str, str]], tls: bool) -> None:
        identity = ctx.identity
        authenticated = (identity is not None and identity.method != "anonymous") \
            or ctx.header("authorization") is not None
        self.security.apply(headers, tls, authenticated)
        self.cors.apply(headers, ctx.header("origin"))

    def _replace(self, ctx: RequestContext, status: int, kept: list[tuple[str, str]], tls: bool,
                 detail: str) -> ResponsePlan:
        headers = [*kept, ("content-type", PROBLEM)]
        self._decorate(ctx, headers, tls)
        return ResponsePlan(status, headers, "replace", body=problem_body(status, detail, ctx.request_id))

    def _withhold(self, ctx: RequestContext, policy_id: str, reason: str, tls: bool) -> ResponsePlan:
        control = "response.max_filter_bytes" if policy_id == self.pid_limit else "response.undeclared"
        ctx.records.append(ControlRecord(control, "deny", policy_id, reason))
        return self._replace(ctx, 502, [], tls, WITHHELD_DETAIL)

    def _problem_from(self, ctx: RequestContext, headers: list[tuple[str, str]], status: int,
                      detail: str) -> tuple[int, list[tuple[str, str]], bytes]:
        fixed = self.security.fixed
        kept = [(n, v) for n, v in headers
                if n in _KEEP_ON_REPLACE or n.startswith("access-control-") or (n, v) in fixed
                or (n == "cache-control" and v == "no-store")]
        return status, [*kept, ("content-type", PROBLEM)], problem_body(status, detail, ctx.request_id)

    @staticmethod
    def _note(ctx: RequestContext, policy_id: str, reason: str) -> None:
        control = "response.max_filter_bytes" if "too_large" in reason else "response.undeclared"
        ctx.records.append(ControlRecord(control, "allow", policy_id, reason))


def prepare(config: Any, services: Services | None) -> ResponseShared:
    """Once per config load."""
    return ResponseShared()


def build(policy: ResponsePolicy, route: RouteInfo, shared: ResponseShared | None) -> ResponseFilter | None:
    """The route's response filter, or None when every response control is off for it."""
    filt = ResponseFilter(policy, route, shared)
    sec = policy.security_headers
    if (filt.contract is None and not policy.rewrite_errors and not filt.cors.enabled and not sec.nosniff
            and not sec.no_store_authenticated and sec.frame_options == "off" and sec.referrer_policy == "off"
            and sec.hsts_max_age <= 0):
        return None
    return filt
