"""The probe's short-lived credential, registered through the running gateway's admin API.

When the config has a JWT provider with `registered_keys:` and no probe key is given or found on disk,
`bastion probe` makes a P-256 key pair in memory, registers the public half with `POST /probe/credentials`
(the admin token from $BASTION_ADMIN_TOKEN when the admin API requires one), signs its tokens with the private
half, and forgets it when it exits. The gateway stops trusting the key when the registration expires.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey

from bastion.stages.identity.config import JwtProviderConfig
from bastion.stages.identity.registered import kid_for

DEFAULT_TTL = 300.0


@dataclass(frozen=True, slots=True)
class RegisteredCredential:
    """A key the gateway trusts until `expires`: the private key stays in this process."""

    provider: str
    kid: str
    expires: float
    key: ECKey
    admin: str  # the admin listener that registered it

    def describe(self) -> dict[str, Any]:
        """For the probe's report: where the identity came from (never the key)."""
        return {"source": "registered", "provider": self.provider, "kid": self.kid, "expires": self.expires,
                "admin": self.admin}


def registered_provider(providers: list[JwtProviderConfig]) -> JwtProviderConfig | None:
    """The first JWT provider that trusts registered keys, if any."""
    return next((p for p in providers if p.registered_keys is not None), None)


def register(admin: str, provider: JwtProviderConfig, *, ttl: float = DEFAULT_TTL, cafile: str | None = None,
             timeout: float = 10.0) -> RegisteredCredential:
    """Register a fresh key for `provider` at the admin listener `admin`. Raises ValueError with the reason."""
    if provider.registered_keys is None:
        raise ValueError(f"provider {provider.name!r} has no registered_keys")
    ttl = min(ttl, provider.registered_keys.max_ttl)
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"}, private=True)
    doc = {"provider": provider.name, "public_jwk": key.as_dict(private=False), "ttl_seconds": ttl}
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("BASTION_ADMIN_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(admin.rstrip("/") + "/probe/credentials", method="POST",
                                     data=json.dumps(doc).encode(), headers=headers)
    context = ssl.create_default_context(cafile=cafile) if admin.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            answer = json.loads(response.read(64 * 1024))
    except urllib.error.HTTPError as exc:
        detail = _problem_detail(exc.read(64 * 1024))
        raise ValueError(f"the admin API at {admin} refused the probe credential ({exc.code}"
                         f"{': ' + detail if detail else ''})") from exc
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot register a probe credential at {admin}: {exc}") from exc
    kid = kid_for(key)
    if not isinstance(answer, dict) or answer.get("kid") != kid:
        raise ValueError(f"the admin API at {admin} registered another key than the probe's")
    signing = ECKey.import_key(key.as_dict(private=True), parameters={"kid": kid, "alg": "ES256"})
    return RegisteredCredential(provider.name, kid, float(answer.get("expires", 0.0)), signing, admin)


def _problem_detail(body: bytes) -> str:
    """The `detail` of an RFC 9457 problem, if the body is one."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return ""
    return detail if isinstance(detail, str) else ""
