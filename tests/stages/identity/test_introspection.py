"""Opaque tokens against a real RFC 7662 introspection server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from conftest import NOW, Clock, make_ctx

from bastion.context import Continue, Deny
from bastion.stages.base import RouteInfo, Services
from bastion.stages.identity import IdentityPolicy, IdentityShared, build
from bastion.stages.identity.config import IntrospectionProviderConfig, ProvidersConfig

ANSWERS = {
    "good": {"active": True, "sub": "alice", "scope": "orders:read", "exp": int(NOW) + 600, "jti": "o1",
             "client_id": "web-app", "aud": "api://orders"},
    "inactive": {"active": False},
    "expired": {"active": True, "sub": "alice", "exp": int(NOW) - 1},
    "string-true": {"active": "true", "sub": "alice"},
    "other-aud": {"active": True, "sub": "alice", "aud": "api://payments"},
}


class Introspect:
    def __init__(self) -> None:
        self.calls = 0
        self.status = 200
        self.server: asyncio.Server | None = None
        self.port = 0
        self.pad_to = 0  # answer bodies padded with trailing whitespace (valid JSON) to this many bytes

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        body = (await reader.readexactly(int(headers["Content-Length"]))).decode()
        self.calls += 1
        auth_ok = headers.get("Authorization") == "Basic " + base64.b64encode(b"bastion:s3cret").decode()
        token = dict(parse_qsl(body)).get("token", "")
        answer = json.dumps(ANSWERS.get(token, {"active": False}) if auth_ok else {"error": "x"}).encode()
        status = self.status if auth_ok else 401
        answer = answer.ljust(self.pad_to)
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n\r\n".encode() + answer)
        await writer.drain()
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Introspect]:
    srv = Introspect()
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = srv.server.sockets[0].getsockname()[1]
    yield srv
    srv.server.close()
    await srv.server.wait_closed()


def shared_for(server: Introspect, clock: Clock, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> IdentityShared:
    monkeypatch.setenv("TEST_INTROSPECTION_SECRET", "s3cret")
    cfg = IntrospectionProviderConfig(name="opaque", endpoint=f"http://127.0.0.1:{server.port}/introspect",
                                      client_id="bastion", client_secret_env="TEST_INTROSPECTION_SECRET",
                                      audiences=["api://orders"], issuer="https://idp.test", **extra)
    return IdentityShared(ProvidersConfig(introspection=[cfg]), [], Services(wall_clock=clock))


@pytest.mark.parametrize(("token", "status", "reason"), [
    ("good", 200, ""), ("inactive", 401, "introspection_inactive"), ("expired", 401, "introspection_inactive"),
    ("string-true", 401, "introspection_inactive"), ("other-aud", 401, "introspection_inactive"),
])
async def test_introspection(server: Introspect, clock: Clock, route: RouteInfo, monkeypatch: pytest.MonkeyPatch,
                             token: str, status: int, reason: str) -> None:
    stage = build(IdentityPolicy(methods=["introspection"]), route, shared_for(server, clock, monkeypatch))
    assert stage is not None
    ctx = make_ctx([("authorization", f"Bearer {token}")])
    decision = await stage.check(ctx)
    if status == 200:
        assert isinstance(decision, Continue)
        assert ctx.identity is not None and ctx.identity.method == "introspection"
        assert ctx.identity.scopes == {"orders:read"}
        assert isinstance(await stage.check(make_ctx([("authorization", f"Bearer {token}")])), Continue)
        assert server.calls == 1  # the second request was answered from the cache
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (status, reason)


async def test_endpoint_failure_fails_closed(server: Introspect, clock: Clock, route: RouteInfo,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server.status = 500
    stage = build(IdentityPolicy(methods=["introspection"]), route, shared_for(server, clock, monkeypatch))
    assert stage is not None
    decision = await stage.check(make_ctx([("authorization", "Bearer good")]))
    assert isinstance(decision, Deny) and (decision.status, decision.reason) == (503, "introspection_unavailable")


@pytest.mark.parametrize(("size", "status"), [(4096, 200), (4097, 503)])
async def test_response_one_byte_over_max_bytes_fails_closed(server: Introspect, clock: Clock, route: RouteInfo,
                                                            monkeypatch: pytest.MonkeyPatch, size: int,
                                                            status: int) -> None:
    server.pad_to = size  # an active answer, padded to exactly `size` bytes
    shared = shared_for(server, clock, monkeypatch, max_bytes=4096)
    stage = build(IdentityPolicy(methods=["introspection"]), route, shared)
    assert stage is not None
    decision = await stage.check(make_ctx([("authorization", "Bearer good")]))
    if status == 200:
        assert isinstance(decision, Continue)
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (503, "introspection_unavailable")
        assert "larger than 4096 bytes" in decision.log_detail


def test_max_bytes_defaults_to_256_kib() -> None:
    cfg = IntrospectionProviderConfig(name="opaque", endpoint="https://idp.test/introspect", client_id="b",
                                      client_secret_env="X")
    assert cfg.max_bytes == 256 * 1024


def test_missing_secret_is_a_load_error(server: Introspect, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_INTROSPECTION_SECRET", raising=False)
    cfg = IntrospectionProviderConfig(name="opaque", endpoint="https://idp.test/introspect", client_id="b",
                                      client_secret_env="TEST_INTROSPECTION_SECRET")
    with pytest.raises(ValueError, match="TEST_INTROSPECTION_SECRET"):
        IdentityShared(ProvidersConfig(introspection=[cfg]), [])
