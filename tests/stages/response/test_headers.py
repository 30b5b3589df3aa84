"""Security headers (TLS vs plaintext, caching of authenticated answers) and CORS (preflight, actual requests)."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.context import Identity
from bastion.openapi import OpenApiDocument
from tests.stages.response.conftest import make_filter, request, value

ORIGIN = "https://app.example.com"
CORS = {"allow_origins": [ORIGIN, "http://localhost:3000"], "allow_methods": ["GET", "PUT", "DELETE"],
        "allow_headers": ["authorization", "content-type", "x-api-key"], "expose_headers": ["x-request-id"]}


@pytest.mark.parametrize(("tls", "policy", "hsts"), [
    (True, {}, "max-age=31536000"),
    (False, {}, None),  # RFC 6797 §7.2: never over plaintext
    (True, {"hsts_max_age": "1d", "hsts_include_subdomains": True}, "max-age=86400; includeSubDomains"),
    (True, {"hsts_max_age": 0}, None),
])
def test_hsts_only_on_tls(users: OpenApiDocument, tls: bool, policy: dict[str, Any], hsts: str | None) -> None:
    filt = make_filter(users, None, security_headers=policy)
    upstream = [("strict-transport-security", "max-age=1")]  # the gateway's policy replaces the upstream's
    plan = filt.head(request(), 200, upstream, tls)
    assert value(plan.headers, "strict-transport-security") == hsts


def test_default_security_headers(users: OpenApiDocument) -> None:
    plan = make_filter(users, None).head(request(), 200, [("x-frame-options", "ALLOW-FROM x"),
                                                          ("content-security-policy", "default-src 'self'")], True)
    h = plan.headers
    assert value(h, "x-content-type-options") == "nosniff"
    assert value(h, "x-frame-options") == "DENY"
    assert value(h, "referrer-policy") == "no-referrer"
    # the upstream's CSP stays, and a second one adds frame-ancestors (browsers enforce both)
    assert [v for n, v in h if n == "content-security-policy"] == ["default-src 'self'", "frame-ancestors 'none'"]
    assert value(h, "cache-control") is None  # anonymous request: the upstream decides


@pytest.mark.parametrize(("policy", "frame", "ancestors", "referrer"), [
    ({"frame_options": "sameorigin", "referrer_policy": "strict-origin-when-cross-origin"}, "SAMEORIGIN",
     "frame-ancestors 'self'", "strict-origin-when-cross-origin"),
    ({"frame_options": "off", "referrer_policy": "off", "nosniff": False}, None, None, None),
])
def test_frame_and_referrer_policies(users: OpenApiDocument, policy: dict[str, Any], frame: str | None,
                                     ancestors: str | None, referrer: str | None) -> None:
    h = make_filter(users, None, security_headers=policy).head(request(), 200, [], False).headers
    assert value(h, "x-frame-options") == frame
    assert value(h, "content-security-policy") == ancestors
    assert value(h, "referrer-policy") == referrer
    assert (value(h, "x-content-type-options") is None) == (policy.get("nosniff") is False)


JWT = Identity(method="jwt", subject="ann")


@pytest.mark.parametrize(("identity", "req_headers", "policy", "upstream", "expected"), [
    (JWT, [], {}, [], "no-store"),
    (JWT, [], {}, [("cache-control", "public, max-age=600")], "no-store"),
    (None, [("authorization", "Basic YTpi")], {}, [("cache-control", "public")], "no-store"),
    (Identity(method="anonymous"), [], {}, [("cache-control", "public")], "public"),
    (None, [], {}, [("cache-control", "public")], "public"),
    (JWT, [], {"keep_upstream_cache_control": True}, [("cache-control", "private, max-age=60")],
     "private, max-age=60"),
    (JWT, [], {"keep_upstream_cache_control": True}, [], "no-store"),  # nothing explicit: still no-store
    (JWT, [], {"no_store_authenticated": False}, [], None),
])
def test_cache_control_on_authenticated_responses(users: OpenApiDocument, identity: Identity | None,
                                                  req_headers: list[tuple[str, str]], policy: dict[str, Any],
                                                  upstream: list[tuple[str, str]], expected: str | None) -> None:
    filt = make_filter(users, None, security_headers=policy)
    plan = filt.head(request(headers=req_headers, identity=identity), 200, [*upstream, ("expires", "0")], False)
    assert value(plan.headers, "cache-control") == expected
    if expected == "no-store":
        assert value(plan.headers, "expires") is None


# ---- CORS ------------------------------------------------------------------------------------------------

def preflight_ctx(origin: str | None = ORIGIN, method: str | None = "PUT",
                  req_headers: str | None = "content-type, X-API-Key") -> Any:
    headers = [(n, v) for n, v in (("origin", origin), ("access-control-request-method", method),
                                   ("access-control-request-headers", req_headers)) if v is not None]
    return request("OPTIONS", headers=headers)


def test_preflight_allowed(users: OpenApiDocument) -> None:
    filt = make_filter(users, None, methods=("GET", "PUT"), cors={**CORS, "allow_credentials": True, "max_age": "1h"})
    ctx = preflight_ctx()
    answer = filt.preflight(ctx)
    assert answer is not None
    status, h = answer
    assert status == 204
    assert value(h, "access-control-allow-origin") == ORIGIN
    assert value(h, "access-control-allow-credentials") == "true"
    assert value(h, "access-control-allow-methods") == "GET, PUT"  # DELETE: not a method of this route
    assert value(h, "access-control-allow-headers") == "authorization, content-type, x-api-key"
    assert value(h, "access-control-max-age") == "3600"
    assert "Origin" in (value(h, "vary") or "")
    assert [(r.control, r.outcome) for r in ctx.records] == [("response.cors", "allow")]


@pytest.mark.parametrize(("case", "ctx_args"), [
    ("unknown origin", {"origin": "https://evil.example"}),
    ("origin differing in scheme", {"origin": "http://app.example.com"}),
    ("origin with a suffix", {"origin": "https://app.example.com.evil.example"}),
    ("null origin", {"origin": "null"}),
    ("method not allowed", {"method": "PATCH"}),
    ("method allowed by policy but not a method of the route", {"method": "DELETE"}),
    ("header not allowed", {"req_headers": "content-type, x-admin"}),
])
def test_preflight_refused(users: OpenApiDocument, case: str, ctx_args: dict[str, Any]) -> None:
    filt = make_filter(users, None, methods=("GET", "PUT"), cors=CORS)
    ctx = preflight_ctx(**ctx_args)
    answer = filt.preflight(ctx)
    assert answer is not None
    status, h = answer
    assert status == 403
    assert not [n for n, _ in h if n.startswith("access-control-")]
    assert [(r.control, r.outcome) for r in ctx.records] == [("response.cors", "deny")]


@pytest.mark.parametrize(("ctx", "cors"), [
    (request("GET", headers=[("origin", ORIGIN), ("access-control-request-method", "GET")]), CORS),  # not OPTIONS
    (preflight_ctx(origin=None), CORS),  # no Origin: a plain OPTIONS request
    (preflight_ctx(method=None), CORS),  # no Access-Control-Request-Method: not a preflight
    (preflight_ctx(), {}),  # CORS off for the route: forwarded (and likely 405)
])
def test_not_a_preflight(users: OpenApiDocument, ctx: Any, cors: dict[str, Any]) -> None:
    assert make_filter(users, None, methods=("GET", "PUT"), cors=cors).preflight(ctx) is None


@pytest.mark.parametrize(("origin", "credentials", "expected"), [
    (ORIGIN, False, {"access-control-allow-origin": ORIGIN, "access-control-expose-headers": "x-request-id"}),
    (ORIGIN, True, {"access-control-allow-origin": ORIGIN, "access-control-allow-credentials": "true",
                    "access-control-expose-headers": "x-request-id"}),
    ("https://evil.example", True, {}),
    (None, True, {}),
])
def test_actual_requests(users: OpenApiDocument, origin: str | None, credentials: bool,
                         expected: dict[str, str]) -> None:
    filt = make_filter(users, None, cors={**CORS, "allow_credentials": credentials})
    upstream = [("access-control-allow-origin", "*"), ("access-control-allow-credentials", "true"),
                ("vary", "Accept-Encoding")]
    ctx = request(headers=[("origin", origin)] if origin else [])
    h = filt.head(ctx, 200, upstream, True).headers
    assert {n: v for n, v in h if n.startswith("access-control-")} == expected  # the upstream's are gone
    assert value(h, "vary") == "Accept-Encoding, Origin"  # whatever the Origin: caches must key on it


def test_cors_off_strips_upstream_cors_and_adds_no_vary(users: OpenApiDocument) -> None:
    filt = make_filter(users, None)
    h = filt.head(request(headers=[("origin", ORIGIN)]), 200, [("access-control-allow-origin", "*")], False).headers
    assert not [n for n, _ in h if n.startswith("access-control-") or n == "vary"]


def test_vary_star_is_kept(users: OpenApiDocument) -> None:
    h = make_filter(users, None, cors=CORS).head(request(), 200, [("vary", "*")], False).headers
    assert [v for n, v in h if n == "vary"] == ["*"]


def test_rewritten_5xx_keeps_cors_and_security_headers(users: OpenApiDocument) -> None:
    """A browser must still be able to read the problem document of a failed cross-origin call."""
    filt = make_filter(users, None, cors={**CORS, "allow_credentials": True})
    plan = filt.head(request(headers=[("origin", ORIGIN)]), 500, [("access-control-allow-origin", "*")], True)
    assert value(plan.headers, "access-control-allow-origin") == ORIGIN
    assert value(plan.headers, "strict-transport-security") == "max-age=31536000"
