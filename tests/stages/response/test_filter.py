"""ResponseFilter: plans for upstream heads, buffered bodies, 5xx rewriting and CORS preflights."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bastion.context import Identity
from bastion.openapi import OpenApiDocument
from bastion.stages.response import ResponsePlan, ResponsePolicy, ResponseShared, build
from tests.stages.response.conftest import make_filter, request, route_for, value

JSON = [("content-type", "application/json")]
USER = {"name": "ann", "id": 7}


def run(filt: Any, ctx: Any, status: int, headers: list[tuple[str, str]], body: bytes,
        tls: bool = False) -> tuple[ResponsePlan, int, list[tuple[str, str]], bytes]:
    """What the server does: head, then (for `buffer`) the whole body, within the cap."""
    plan = filt.head(ctx, status, [*headers, ("content-length", str(len(body)))], tls)
    if plan.action == "replace":
        return plan, plan.status, plan.headers, plan.body
    if plan.action == "buffer":
        if len(body) > plan.max_bytes:
            answer = filt.overflow(ctx, plan)
            if answer is not None:
                return plan, *answer
            return plan, plan.status, plan.headers, body
        return plan, *filt.body(ctx, plan.status, plan.headers, body)
    return plan, plan.status, plan.headers, body


CASES: list[tuple[str, str, dict[str, Any], int, list[tuple[str, str]], Any, str, int, Any, str]] = [
    # (case, operation, policy, status, headers, body, action, out status, out body, record reason)
    ("strip removes undeclared", "getUser", {}, 200, JSON, {**USER, "internal": 1}, "buffer", 200, USER,
     "response_stripped"),
    ("conforming body untouched", "getUser", {}, 200, JSON, USER, "buffer", 200, USER, ""),
    ("block refuses undeclared", "getUser", {"undeclared": "block"}, 200, JSON, {**USER, "internal": 1}, "buffer",
     502, None, "response_undeclared"),
    ("block passes conforming", "getUser", {"undeclared": "block"}, 200, JSON, USER, "buffer", 200, USER, ""),
    ("allow never buffers", "getUser", {"undeclared": "allow"}, 200, JSON, {**USER, "internal": 1}, "stream", 200,
     {**USER, "internal": 1}, ""),
    ("strip: unfilterable is refused", "getPet", {}, 200, JSON, {"purrs": True}, "buffer", 502, None,
     "response_unfilterable"),
    ("status without a declared schema passes", "getUser", {}, 404, JSON, {"internal": 1}, "stream", 404,
     {"internal": 1}, ""),
    ("non-JSON body passes", "getUser", {}, 200, [("content-type", "text/csv")], b"a,b\n1,2\n", "stream", 200,
     b"a,b\n1,2\n", ""),
    ("no operation: nothing to check", None, {}, 200, JSON, {"internal": 1}, "stream", 200, {"internal": 1}, ""),
    ("strip: too large passes unfiltered, counted", "getUser", {"max_filter_bytes": 10}, 200, JSON,
     {**USER, "internal": 1}, "stream", 200, {**USER, "internal": 1}, "response_unfiltered_too_large"),
    ("block: too large refused before reading", "getUser", {"max_filter_bytes": 10, "undeclared": "block"}, 200,
     JSON, USER, "replace", 502, None, "response_too_large_to_filter"),
    ("block: compressed body refused", "getUser", {"undeclared": "block"}, 200,
     [*JSON, ("content-encoding", "gzip")], b"\x1f\x8b", "replace", 502, None, "response_encoded"),
    ("strip: compressed body passes, counted", "getUser", {}, 200, [*JSON, ("content-encoding", "gzip")],
     b"\x1f\x8b", "stream", 200, b"\x1f\x8b", "response_unfiltered_encoded"),
]


@pytest.mark.parametrize(("case", "operation_id", "policy", "status", "headers", "body", "action", "out_status",
                          "out_body", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bodies(users: OpenApiDocument, shared: ResponseShared, case: str, operation_id: str | None,
                policy: dict[str, Any], status: int, headers: list[tuple[str, str]], body: Any, action: str,
                out_status: int, out_body: Any, reason: str) -> None:
    filt = make_filter(users, operation_id, shared, **policy)
    ctx = request()
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    plan, got_status, got_headers, got_body = run(filt, ctx, status, headers, raw)
    assert plan.action == action
    assert got_status == out_status
    if out_status == 502:
        problem = orjson.loads(got_body)
        assert problem["status"] == 502 and problem["request_id"] == "req-1"
        assert value(got_headers, "content-type") == "application/problem+json"
        assert b"internal" not in got_body
    elif isinstance(out_body, bytes):
        assert got_body == out_body
    else:
        assert orjson.loads(got_body) == out_body
    assert [r.reason for r in ctx.records] == ([reason] if reason else [])
    if reason:
        record = ctx.records[0]
        assert record.outcome == ("deny" if out_status == 502 else "allow")
        assert record.policy_id.startswith("class:public/users/")


def test_block_mode_overflow_while_buffering(users: OpenApiDocument) -> None:
    """Chunked (no Content-Length): the cap is found while buffering; block answers 502 then."""
    filt = make_filter(users, "getUser", undeclared="block", max_filter_bytes=8)
    ctx = request()
    plan = filt.head(ctx, 200, [*JSON, ("set-cookie", "s=1")], False)
    assert (plan.action, plan.max_bytes, plan.overflow) == ("buffer", 8, "block")
    answer = filt.overflow(ctx, plan)
    assert answer is not None
    status, headers, body = answer
    assert status == 502 and orjson.loads(body)["status"] == 502
    assert value(headers, "set-cookie") is None  # nothing of the withheld response is sent
    assert value(headers, "x-content-type-options") == "nosniff"


def test_strip_mode_overflow_streams_and_counts(users: OpenApiDocument) -> None:
    filt = make_filter(users, "getUser", max_filter_bytes=8)
    ctx = request()
    plan = filt.head(ctx, 200, JSON, False)
    assert (plan.action, plan.overflow) == ("buffer", "stream")
    assert filt.overflow(ctx, plan) is None
    assert [(r.outcome, r.reason) for r in ctx.records] == [("allow", "response_unfiltered_too_large")]


def test_head_requests_and_empty_statuses_stream(users: OpenApiDocument) -> None:
    filt = make_filter(users, "getUser")
    assert filt.head(request("HEAD"), 200, JSON, False).action == "stream"
    assert filt.head(request(), 304, JSON, False).action == "stream"
    assert filt.filters_bodies


UPSTREAM_500 = (b'Traceback (most recent call last):\n  File "/srv/app/db.py", line 12\n'
                b'psycopg2.OperationalError: could not connect to server at db-internal.corp:5432')


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_bodies_are_replaced(users: OpenApiDocument, status: int) -> None:
    filt = make_filter(users, "getUser")
    ctx = request()
    upstream = [("content-type", "text/plain"), ("server", "gunicorn/20"), ("x-debug-host", "app-7.corp"),
                ("set-cookie", "dbg=1"), ("retry-after", "30")]
    plan, got_status, headers, body = run(filt, ctx, status, upstream, UPSTREAM_500)
    assert plan.action == "replace" and got_status == status
    problem = orjson.loads(body)
    assert problem == {"type": "about:blank", "title": problem["title"], "status": status,
                       "detail": "The upstream service failed to process the request.", "request_id": "req-1"}
    text = body + repr(headers).encode()
    for leak in (b"Traceback", b"db-internal", b"psycopg2", b"gunicorn", b"app-7", b"dbg"):
        assert leak not in text
    assert value(headers, "retry-after") == "30"
    assert value(headers, "content-type") == "application/problem+json"
    assert [r.reason for r in ctx.records] == ["response_error_rewritten"]


def test_5xx_rewrite_configurable(users: OpenApiDocument) -> None:
    custom = make_filter(users, "getUser", error_detail="Try again later.")
    plan = custom.head(request(), 500, [], False)
    assert orjson.loads(plan.body)["detail"] == "Try again later."
    off = make_filter(users, "getUser", rewrite_errors=False)
    plan = off.head(request(), 500, [("content-type", "text/plain")], False)
    assert plan.action == "stream" and plan.status == 500


def test_software_and_hop_by_hop_headers_are_dropped(users: OpenApiDocument) -> None:
    filt = make_filter(users, None)
    upstream = [("server", "nginx/1.2"), ("x-powered-by", "PHP/5"), ("x-aspnet-version", "4"),
                ("connection", "close, x-secret"), ("x-secret", "1"), ("transfer-encoding", "chunked"),
                ("content-length", "3"), ("etag", '"a"')]
    plan = filt.head(request(), 200, upstream, False)
    sent = {n for n, _ in plan.headers}
    assert "etag" in sent
    assert not sent & {"server", "x-powered-by", "x-aspnet-version", "connection", "x-secret",
                       "transfer-encoding", "content-length"}


def test_build_returns_none_when_everything_is_off(users: OpenApiDocument) -> None:
    off = ResponsePolicy.model_validate({
        "undeclared": "allow", "rewrite_errors": False,
        "security_headers": {"hsts_max_age": 0, "nosniff": False, "no_store_authenticated": False,
                             "frame_options": "off", "referrer_policy": "off"}})
    assert build(off, route_for(users, "getUser"), None) is None
    assert build(ResponsePolicy(), route_for(users, "getUser"), None) is not None


def test_authenticated_identity_gets_no_store(users: OpenApiDocument) -> None:
    filt = make_filter(users, None)
    ctx = request(identity=Identity(method="jwt", subject="ann"))
    plan = filt.head(ctx, 200, [("cache-control", "public, max-age=3600")], False)
    assert value(plan.headers, "cache-control") == "no-store"


def test_answer_headers_for_gateway_denials(users: OpenApiDocument) -> None:
    filt = make_filter(users, None, cors={"allow_origins": ["https://app.example.com"]})
    ctx = request(headers=[("origin", "https://app.example.com"), ("authorization", "Bearer x")])
    h = filt.answer_headers(ctx, True)
    assert value(h, "access-control-allow-origin") == "https://app.example.com"
    assert value(h, "strict-transport-security") == "max-age=31536000"
    assert value(h, "x-content-type-options") == "nosniff"
    assert value(h, "cache-control") is None  # the problem helper sets its own


def test_upstream_request_id_and_trace_are_not_forwarded(users: OpenApiDocument) -> None:
    plan = make_filter(users, None).head(request(), 200, [("x-request-id", "up-1"), ("traceparent", "00-x")], False)
    assert value(plan.headers, "x-request-id") is None and value(plan.headers, "traceparent") is None
