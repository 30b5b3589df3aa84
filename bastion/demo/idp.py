"""A demo OpenID provider for `bastion demo` and the tests: discovery, a JWKS and a token endpoint.

Keys (ES256 and RS256) are generated at start and exist only in memory. Tokens are RFC 9068 access tokens
(`typ: at+jwt`) for the demo users. Not for production: anyone who can reach it gets a token.

    GET  /.well-known/openid-configuration
    GET  /jwks.json
    GET  /token?user=alice&scope=orders:read&aud=api://demo&alg=RS256   -> the token as text/plain
    GET  /token?user=alice&ttl=-60      -> a token that expired a minute ago (try the gateway's refusal)
    GET  /token?user=alice&aud=api://other   -> a token for another audience
    POST /token  (form: username=alice&scope=...)                       -> {"access_token": ..., ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey


@dataclass(frozen=True, slots=True)
class DemoUser:
    scopes: tuple[str, ...]
    roles: tuple[str, ...] = ()


USERS: dict[str, DemoUser] = {
    "alice": DemoUser(("orders:read", "orders:write"), ("admin",)),
    "bob": DemoUser(("orders:read",)),
}
DEFAULT_AUDIENCE = "api://demo"
TOKEN_LIFETIME = 3600
MAX_TTL = 86400
_MAX_BODY = 64 * 1024


class IdpServer:
    """A running demo IdP. `mint()` makes tokens directly (tests); HTTP clients use `/token`."""

    def __init__(self, host: str, audience: str = DEFAULT_AUDIENCE) -> None:
        self.host = host
        self.port = 0
        self.audience = audience
        self.es256: Key = ECKey.generate_key("P-256", parameters={"kid": "demo-es256", "use": "sig",
                                                                    "alg": "ES256"})
        self.rs256: Key = RSAKey.generate_key(2048, parameters={"kid": "demo-rs256", "use": "sig",
                                                                 "alg": "RS256"})
        self.requests: dict[str, int] = {}
        self._server: asyncio.Server | None = None

    @property
    def issuer(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.es256.as_dict(private=False), self.rs256.as_dict(private=False)]}

    def mint(self, sub: str, scopes: list[str] | tuple[str, ...] | str = (), aud: str | None = None, *,
             alg: str = "ES256", lifetime: int = TOKEN_LIFETIME, **claims: Any) -> str:
        """An access token for `sub`; extra claims override the defaults."""
        now = int(time.time())
        scope = scopes if isinstance(scopes, str) else " ".join(scopes)
        # an expired token (lifetime <= 0) was issued a normal lifetime before it expired
        issued = now if lifetime > 0 else now + lifetime - TOKEN_LIFETIME
        payload: dict[str, Any] = {
            "iss": self.issuer, "sub": sub, "aud": aud or self.audience, "iat": issued, "exp": now + lifetime,
            "jti": secrets.token_hex(12), "client_id": "demo-cli", "scope": scope,
        }
        user = USERS.get(sub)
        if user is not None and user.roles:
            payload["roles"] = list(user.roles)
        payload.update(claims)
        key = self.rs256 if alg == "RS256" else self.es256
        header = {"alg": alg, "typ": "at+jwt", "kid": key.kid}
        return jwt.encode(header, payload, key, algorithms=[alg])

    def _token_for(self, params: dict[str, str]) -> tuple[int, str] | str:
        name = params.get("user") or params.get("username") or ""
        user = USERS.get(name)
        if user is None:
            return 400, json.dumps({"error": "invalid_request", "error_description": "unknown demo user"})
        wanted = params.get("scope")
        scopes = [s for s in wanted.split() if s in user.scopes] if wanted else list(user.scopes)
        alg = params.get("alg", "ES256")
        if alg not in ("ES256", "RS256"):
            return 400, json.dumps({"error": "invalid_request", "error_description": "alg: ES256 or RS256"})
        try:
            ttl = int(params.get("ttl", TOKEN_LIFETIME))
        except ValueError:
            ttl = 0
        if not -MAX_TTL <= ttl <= MAX_TTL or ttl == 0:
            return 400, json.dumps({"error": "invalid_request", "error_description":
                                    f"ttl: seconds, non-zero, within +-{MAX_TTL} (negative: already expired)"})
        return self.mint(name, scopes, params.get("aud"), alg=alg, lifetime=ttl)

    def respond(self, method: str, target: str, body: bytes) -> tuple[int, str, str]:
        """(status, content type, body) for one request; pure, so it is easy to test."""
        parts = urlsplit(target)
        path = parts.path
        self.requests[path] = self.requests.get(path, 0) + 1
        if method == "GET" and path == "/.well-known/openid-configuration":
            doc = {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks.json",
                   "token_endpoint": f"{self.issuer}/token", "id_token_signing_alg_values_supported":
                   ["ES256", "RS256"], "response_types_supported": ["token"], "subject_types_supported":
                   ["public"]}
            return 200, "application/json", json.dumps(doc)
        if method == "GET" and path == "/jwks.json":
            return 200, "application/jwk-set+json", json.dumps(self.jwks())
        if path == "/token" and method in ("GET", "POST"):
            source = parts.query if method == "GET" else body.decode("utf-8", "replace")
            result = self._token_for(dict(parse_qsl(source)))
            if isinstance(result, tuple):
                return result[0], "application/json", result[1]
            if method == "GET":
                return 200, "text/plain", result
            answer: dict[str, Any] = {"access_token": result, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME}
            return 200, "application/json", json.dumps(answer)
        return 404, "application/json", json.dumps({"error": "not_found"})

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length > _MAX_BODY:
                raise ValueError("body too large")
            body = await reader.readexactly(length) if length else b""
            status, ctype, text = self.respond(method, target, body)
            data = text.encode()
            writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(data)}\r\nCache-Control: max-age=300\r\nConnection: close\r\n"
                         "\r\n".encode() + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError,
                ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


async def start_idp(host: str = "127.0.0.1", port: int = 0, audience: str = DEFAULT_AUDIENCE) -> IdpServer:
    """Start the demo IdP on host:port (0 = any free port); `.issuer` is its base URL."""
    server = IdpServer(host, audience)
    await server.start(port)
    return server
