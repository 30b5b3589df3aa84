"""The JWT/JOSE front end: whatever the bearer string, a verified token or `TokenRejected`, nothing else."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from pathlib import Path

from bastion.stages.identity.config import JwtProviderConfig
from bastion.stages.identity.jwks import JwksCache
from bastion.stages.identity.jwt import JwtVerifier, ProviderVerifier, TokenRejected

SECRET = b"fuzz-secret-fuzz-secret-fuzz-32b"
_state: tuple[asyncio.AbstractEventLoop, JwtVerifier] | None = None


def _verifier() -> tuple[asyncio.AbstractEventLoop, JwtVerifier]:
    global _state
    if _state is None:
        folder = Path(tempfile.mkdtemp(prefix="bastion-fuzz-"))
        key = {"kty": "oct", "kid": "k1", "alg": "HS256", "k": base64.urlsafe_b64encode(SECRET).rstrip(b"=").decode()}
        (folder / "jwks.json").write_text(json.dumps({"keys": [key]}))
        provider = JwtProviderConfig(name="fuzz", issuer="https://idp.fuzz", audiences=["api://fuzz"],
                                     algorithms=["HS256"], jwks_file=folder / "jwks.json")
        jwks = JwksCache(provider.name, provider.jwks_cache, jwks_file=provider.jwks_file)
        _state = asyncio.new_event_loop(), JwtVerifier([ProviderVerifier(provider, jwks)])
    return _state


def jwt(data: bytes) -> None:
    loop, verifier = _verifier()
    token = data.decode("utf-8", "surrogateescape")
    try:
        verified = loop.run_until_complete(verifier.verify(token))
    except TokenRejected:
        return
    # accepted: only with our key, so the fuzzer found the secret or a bypass; either way a crash to look at
    raise AssertionError(f"a token was accepted: {verified!r}")
