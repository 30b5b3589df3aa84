from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.context import Identity, RequestContext
from bastion.openapi import OpenApiDocument, load_openapi
from bastion.stages.base import RouteInfo
from bastion.stages.response import ResponseFilter, ResponsePolicy, ResponseShared, build, prepare

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def users() -> OpenApiDocument:
    return load_openapi(HERE / "users.yaml")


@pytest.fixture(scope="session")
def shared() -> ResponseShared:
    return prepare(None, None)


def route_for(doc: OpenApiDocument | None, operation_id: str | None, methods: tuple[str, ...] = ("GET",)) -> RouteInfo:
    if doc is None or operation_id is None:
        return RouteInfo(api="users", route="raw", klass="public", path="/raw", methods=frozenset(methods))
    op = doc.operation(operation_id)
    assert op is not None
    return RouteInfo(api="users", route=operation_id, klass="public", path=op.path,
                     methods=frozenset({op.method, *methods}), path_params=op.path_params, operation=op.operation)


def make_filter(doc: OpenApiDocument | None, operation_id: str | None, shared: ResponseShared | None = None,
                methods: tuple[str, ...] = ("GET",), **policy: Any) -> ResponseFilter:
    filt = build(ResponsePolicy.model_validate(policy), route_for(doc, operation_id, methods), shared)
    assert filt is not None
    return filt


def request(method: str = "GET", headers: list[tuple[str, str]] | None = None,
            identity: Identity | None = None) -> RequestContext:
    ctx = RequestContext(method=method, raw_target="/", path="/", query="", headers=list(headers or []),
                         client_ip="127.0.0.1", request_id="req-1", start=0.0)
    ctx.identity = identity
    return ctx


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [n for n, _ in headers]


def value(headers: list[tuple[str, str]], name: str) -> str | None:
    found = [v for n, v in headers if n == name]
    assert len(found) <= 1, f"{name} repeated: {found}"
    return found[0] if found else None
