from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.context import RequestContext
from bastion.openapi import OpenApiDocument, load_openapi
from bastion.stages.base import RouteInfo
from bastion.stages.input import InputPolicy, InputShared, build_body, build_head, prepare

DATA = Path(__file__).resolve().parents[2] / "data" / "openapi"


@pytest.fixture(scope="session")
def shop() -> OpenApiDocument:
    return load_openapi(DATA / "shop.yaml")


@pytest.fixture(scope="session")
def notes() -> OpenApiDocument:
    return load_openapi(DATA / "notes31.yaml")


@pytest.fixture(scope="session")
def shared() -> InputShared:
    return prepare(None, None)  # type: ignore[arg-type]


def route_for(doc: OpenApiDocument, operation_id: str | None) -> RouteInfo:
    if operation_id is None:
        return RouteInfo(api="shop", route="raw", klass="public", path="/raw", methods=frozenset({"POST"}))
    op = doc.operation(operation_id)
    assert op is not None
    return RouteInfo(api="shop", route=operation_id, klass="public", path=op.path, methods=frozenset({op.method}),
                     path_params=op.path_params, operation=op.operation)


def request(method: str = "GET", query: str = "", headers: list[tuple[str, str]] | None = None,
            path_params: dict[str, str] | None = None, body: bytes | None = None) -> RequestContext:
    hdrs = list(headers or [])
    if body is not None and not any(k == "content-length" for k, _ in hdrs):
        hdrs.append(("content-length", str(len(body))))
    ctx = RequestContext(method=method, raw_target="/", path="/", query=query, headers=hdrs,
                         client_ip="127.0.0.1", request_id="r1", start=0.0)
    ctx.path_params = dict(path_params or {})
    ctx.body = body
    return ctx


async def run_input(doc: OpenApiDocument, operation_id: str | None, ctx: RequestContext,
                    shared: InputShared, **policy: Any) -> Any:
    """Head stage, then (if it allowed the request) the body stage, as the server runs them."""
    route = route_for(doc, operation_id)
    pol = InputPolicy(**policy)
    head = build_head(pol, route, shared)
    if head is not None:
        decision = await head.check(ctx)
        if decision.__class__.__name__ == "Deny":
            return decision
    body = build_body(pol, route, shared)
    if body is not None and ctx.body is not None:
        return await body.check(ctx)
    return decision if head is not None else None
