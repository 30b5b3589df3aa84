"""Shared test machinery: signing keys, a real JWKS HTTP server on 127.0.0.1, token minting, contexts."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from joserfc.jwk import ECKey, Key, RSAKey
from joserfc.jws import JWSRegistry

from bastion.context import RequestContext
from bastion.stages.base import RouteInfo

ISSUER = "https://idp.test"
AUDIENCE = "api://orders"
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key: Key | None, claims: dict[str, Any], header: dict[str, Any]) -> str:
    """Sign with any algorithm (also the ones Bastion refuses) to build hostile tokens."""
    alg = header["alg"]
    if alg.lower() == "none":
        return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."
    # signed by hand (joserfc's algorithm, no header checks) so that malformed headers can be built too
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = JWSRegistry.algorithms[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


@dataclass
class Keys:
    rsa: RSAKey
    ec: ECKey
    other_ec: ECKey

    def public_jwks(self, *keys: Key) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in keys]}


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"}),
        ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig", "alg": "ES256"}),
        ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig", "alg": "ES256"}),
    )


@dataclass
class Minter:
    keys: Keys
    now: float = NOW

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.now)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300,
                  "jti": "jti-1", "scope": "orders:read orders:write", "client_id": "web-app"}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: Key | None = None, header: dict[str, Any] | None = None, **claims: Any) -> str:
        key = key or self.keys.ec
        hdr = {"alg": "ES256" if key.key_type == "EC" else "RS256", "typ": "at+jwt", "kid": key.kid}
        hdr.update(header or {})
        return sign(key, self.claims(**claims), {k: v for k, v in hdr.items() if v is not None})


@pytest.fixture
def minter(keys: Keys) -> Minter:
    return Minter(keys)


@dataclass
class JwksServer:
    """A real HTTP/1.1 server: /jwks.json, /.well-known/openid-configuration; counts and can fail."""

    jwks: dict[str, Any]
    cache_control: str = "max-age=600"
    status: int = 200
    delay: float = 0.0
    hits: dict[str, int] = field(default_factory=dict)
    issuer: str = ISSUER
    server: asyncio.Server | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.hits[path] = self.hits.get(path, 0) + 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if path == "/.well-known/openid-configuration":
                body = json.dumps({"issuer": self.issuer, "jwks_uri": f"{self.url}/jwks.json"}).encode()
            else:
                body = json.dumps(self.jwks).encode()
            status = self.status if path == "/jwks.json" else 200
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nCache-Control: "
                         f"{self.cache_control}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> JwksServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def jwks_server(keys: Keys) -> AsyncIterator[JwksServer]:
    server = await JwksServer(keys.public_jwks(keys.ec, keys.rsa)).start()
    yield server
    await server.close()


class Clock:
    """A settable clock for wall time and monotonic time."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


ROUTE = RouteInfo(api="orders", route="list", klass="public", path="/orders", methods=frozenset({"GET"}))


def make_ctx(headers: list[tuple[str, str]] | None = None, query: str = "", peer_cert: bytes | None = None,
             client_ip: str = "127.0.0.1") -> RequestContext:
    target = "/orders" + (f"?{query}" if query else "")
    return RequestContext(method="GET", raw_target=target, path="/orders", query=query,
                          headers=headers or [], client_ip=client_ip, request_id="r1", start=time.monotonic(),
                          tls=peer_cert is not None, peer_cert=peer_cert)


@pytest.fixture
def ctx_factory():  # type: ignore[no-untyped-def]
    return make_ctx


@pytest.fixture
def route() -> RouteInfo:
    return ROUTE
