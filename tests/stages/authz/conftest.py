"""Helpers of the authorisation tests: routes, requests and identities built directly, and a fixed clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bastion.context import Identity, RequestContext
from bastion.stages.authz import AuthzPolicy, AuthzShared, build, build_body, prepare
from bastion.stages.base import RouteInfo, Services

NOON = 1_767_268_800.0  # 2026-01-01T12:00:00Z, a Thursday


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def route(path: str = "/accounts/{account_id}", *, operation: dict[str, Any] | None = None,
          sources: dict[str, str] | None = None, name: str = "get-account") -> RouteInfo:
    params = tuple(p[1:-1] for p in path.split("/") if p.startswith("{"))
    return RouteInfo(api="bank", route=name, klass="partner", path=path, methods=frozenset({"GET"}),
                     path_params=params, operation=operation, sources=sources or {})


def caller(subject: str | None = "alice", *, scopes: str = "", roles: str = "", consumer: str | None = None,
           method: str = "jwt", **claims: Any) -> Identity:
    return Identity(method=method, subject=subject, consumer=consumer, issuer="https://idp.test",
                    claims={"sub": subject, **claims}, scopes=frozenset(scopes.split()),
                    roles=frozenset(roles.split()))


def request(identity: Identity | None = None, *, method: str = "GET", path: str = "/", query: str = "",
            params: dict[str, str] | None = None, headers: list[tuple[str, str]] | None = None,
            client_ip: str = "192.0.2.10", body: bytes | None = None) -> RequestContext:
    ctx = RequestContext(method=method, raw_target=path + (f"?{query}" if query else ""), path=path, query=query,
                         headers=headers or [], client_ip=client_ip, request_id="req-1", start=0.0)
    ctx.identity = identity
    ctx.path_params = params or {}
    ctx.body = body
    ctx.api, ctx.route = "bank", "get-account"
    return ctx


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def shared(clock: Clock) -> AsyncIterator[AuthzShared]:
    state = prepare(None, Services(wall_clock=clock, monotonic=clock))
    yield state
    await state.close()


def stage(shared: AuthzShared, info: RouteInfo | None = None, **policy: Any) -> Any:
    built = build(AuthzPolicy.model_validate(policy), info or route(), shared)
    assert built is not None
    return built


def body_stage(shared: AuthzShared, info: RouteInfo | None = None, **policy: Any) -> Any:
    built = build_body(AuthzPolicy.model_validate(policy), info or route(), shared)
    assert built is not None and built.needs_body
    return built
