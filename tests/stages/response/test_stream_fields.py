"""`ResponseFilter.stream_fields` (the bytes fast path) answers exactly what `head` answers, or defers to it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bastion.context import Identity
from tests.stages.response.conftest import make_filter, request

UPSTREAM = [
    ("Content-Type", "application/json"), ("Content-Length", "17"), ("Server", "nginx"), ("X-Powered-By", "php"),
    ("Cache-Control", "max-age=60"), ("Pragma", "cache"), ("Expires", "0"), ("X-Frame-Options", "ALLOWALL"),
    ("Strict-Transport-Security", "max-age=1"), ("Access-Control-Allow-Origin", "*"), ("X-Request-ID", "up"),
    ("traceparent", "00-x"), ("Set-Cookie", "a=b"), ("Connection", "keep-alive"), ("ETag", '"v1"'),
]
POLICIES: list[dict[str, Any]] = [
    {},
    {"security_headers": {"hsts_max_age": 3600, "hsts_include_subdomains": True, "referrer_policy": "no-referrer"}},
    {"security_headers": {"nosniff": False, "frame_options": "off", "no_store_authenticated": False}},
    {"security_headers": {"frame_options": "sameorigin"}, "rewrite_errors": False},
]
ALICE = Identity("jwt", subject="alice")


def serialise(headers: list[tuple[str, str]]) -> bytes:
    return "".join(f"{n}: {v}\r\n" for n, v in headers).encode("latin-1")


@pytest.mark.parametrize(("policy", "status", "tls", "who"), list(itertools.product(
    POLICIES, [200, 404, 503], [False, True], ["anonymous", "identified", "authorization header"])))
def test_fast_path_equals_head(policy, status, tls, who):
    filt = make_filter(None, None, **policy)
    headers = [("authorization", "Bearer x")] if who == "authorization header" else []
    ctx = request(headers=headers, identity=ALICE if who == "identified" else None)
    raw = [(n.encode(), v.encode()) for n, v in UPSTREAM]
    fast = filt.stream_fields(ctx, status, raw, tls)
    plan = filt.head(ctx, status, [(n.lower(), v) for n, v in UPSTREAM], tls)
    if fast is None:  # deferred: only where `head` does more than stream
        assert status >= 500 and filt.rewrite and plan.action == "replace"
        return
    assert plan.action == "stream" and plan.status == status
    assert fast == (17, serialise(plan.headers))


def test_cors_contracts_and_kept_upstream_caching_take_the_general_path():
    raw = [(b"content-type", b"application/json")]
    cors = make_filter(None, None, cors={"allow_origins": ["https://app.example"]})
    assert cors.stream_fields(request(), 200, raw, False) is None
    keep = make_filter(None, None, security_headers={"keep_upstream_cache_control": True})
    assert keep.stream_fields(request(identity=ALICE), 200, raw, False) is None
    assert keep.stream_fields(request(), 200, raw, False) is not None  # anonymous: nothing to weigh


def test_connection_listed_fields_take_the_general_path():
    filt = make_filter(None, None)
    raw = [(b"connection", b"x-secret"), (b"x-secret", b"1")]
    assert filt.stream_fields(request(), 200, raw, False) is None
