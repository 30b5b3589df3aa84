"""Helpers of the authorisation tests: routes, requests and identities built directly, and a fixed clock."""

from __future__ import annotations

import asyncio
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


def _patient(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy with a 5 s peer timeout where the test names none: the 100 ms default is a production figure, and
    a cold first connection on a loaded CI machine can take longer (a test of the timeout itself names one)."""
    peers = [policy.get("opa"), (policy.get("owner") or {}).get("lookup")]
    for peer in peers:
        if isinstance(peer, dict):
            peer.setdefault("timeout", "5s")
    return policy


def stage(shared: AuthzShared, info: RouteInfo | None = None, **policy: Any) -> Any:
    built = build(AuthzPolicy.model_validate(_patient(policy)), info or route(), shared)
    assert built is not None
    return built


def body_stage(shared: AuthzShared, info: RouteInfo | None = None, **policy: Any) -> Any:
    built = build_body(AuthzPolicy.model_validate(_patient(policy)), info or route(), shared)
    assert built is not None and built.needs_body
    return built


class PeerServer:
    """A real HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length) answering with `handler`.

    `handler(method, target, body) -> (status, body bytes, delay seconds)`; every request is recorded.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str, bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> PeerServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append((method, target, body))
                status, answer, delay = self.handler(method, target, body)
                if delay:
                    await asyncio.sleep(delay)
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            self.writers.discard(writer)
            writer.close()


@pytest.fixture
async def peer() -> AsyncIterator[Any]:
    """`await peer(handler)` starts a PeerServer; all are stopped after the test."""
    started: list[PeerServer] = []

    async def start(handler: Any) -> PeerServer:
        server = await PeerServer(handler).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
