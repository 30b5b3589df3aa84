"""`POST /probe/credentials` on the admin listener: register the probe's public key for a short time.

The call is behind the admin API's authentication like `/reload` and `/revocations` (with `gateway.admin.auth`,
an admin credential; without it, the loopback-only listener), and its audit event names the provider, the key
and when its trust ends. Trust ends by itself: the registration expires in the state backend.

```
POST /probe/credentials  {"public_jwk": {"kty": "EC", "crv": "P-256", "x": "...", "y": "..."}, "ttl_seconds": 300}
200 {"provider": "bastion-probe", "issuer": "urn:bastion:probe", "audience": "api://demo", "kid": "reg-p256....",
     "expires": 1796126400.0, "ttl_seconds": 300}
```
"""

from __future__ import annotations

from typing import Any

import orjson

from bastion.server.admin_routes import _reply, note, request_id
from bastion.server.http1 import Exchange
from bastion.stages.identity.registered import RegisteredKeys, public_key
from bastion.state import StateUnavailable

DEFAULT_TTL = 300.0


def probe_credential_routes(layer: Any) -> dict[tuple[str, str], Any]:
    """The endpoint, on the identity layer of the config serving now (`layer()`: its `jwks` and `wall_clock`)."""

    async def register(ex: Exchange, body: bytes) -> None:
        identity = layer()
        sources = {name: s for name, s in identity.jwks.items() if isinstance(s, RegisteredKeys)}
        if not sources:
            return ex.problem(404, "No JWT provider has registered_keys.", request_id())
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            return ex.problem(400, "Send {\"public_jwk\": {...}, \"ttl_seconds\": n}.", request_id())
        name = doc.get("provider")
        if name is None and len(sources) == 1:
            name = next(iter(sources))
        source = sources.get(name) if isinstance(name, str) else None
        if source is None:
            return ex.problem(400, f"Name one provider with registered_keys: {', '.join(sorted(sources))}.",
                              request_id())
        ttl = doc.get("ttl_seconds", DEFAULT_TTL)
        try:
            key = public_key(doc.get("public_jwk"))
            if isinstance(ttl, bool) or not isinstance(ttl, int | float):
                raise ValueError("ttl_seconds must be a number")
            registration = await source.register(key, float(ttl), identity.wall_clock())
        except ValueError as exc:
            return ex.problem(400, str(exc), request_id())
        except StateUnavailable:
            return ex.problem(503, "The state backend is unavailable.", request_id())
        provider = next(p for p in identity.verifier.by_issuer.values() if p.config.name == source.provider)
        note(probe_credential={"provider": registration.provider, "kid": registration.kid,
                               "expires": registration.expires})
        _reply(ex, 200, {"provider": registration.provider, "issuer": provider.config.issuer,
                         "audience": provider.config.audiences[0], "kid": registration.kid,
                         "expires": registration.expires, "ttl_seconds": float(ttl)})

    return {("POST", "/probe/credentials"): register}
