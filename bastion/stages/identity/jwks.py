"""A provider's signing keys: fetched at start, refreshed in the background, never flooded by unknown `kid`s.

- single flight: concurrent callers share one fetch;
- an unknown `kid` triggers at most one refetch per cooldown, and is then negatively cached for the cooldown;
- the last good key set keeps serving for `stale_grace` past its expiry while the IdP is unreachable;
- no key set ever fetched (or grace exhausted) -> `JwksUnavailable` (the stage answers 503, fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from bastion.http.fetch import FetchError, HttpResponse, fetch
from bastion.stages.identity.config import JwksCacheConfig
from bastion.stages.identity.metrics import IdentityMetrics, identity_metrics

log = logging.getLogger("bastion.identity.jwks")

Fetcher = Callable[..., Awaitable[HttpResponse]]

# RFC 7518 §3.1 / RFC 8037: the key type (and curve) each algorithm needs. One key <-> one algorithm family:
# an RSA or EC public key can never be used as an HMAC secret (RFC 8725 §2.1, §3.1).
_KEY_FOR_ALG: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None), "Ed25519": ("OKP", "Ed25519"),
    "HS256": ("oct", None), "HS384": ("oct", None), "HS512": ("oct", None),
}
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_NEGATIVE_MAX = 10_000
_FITTING_MAX = 1024  # (kid, alg) pairs remembered per key set


class JwksUnavailable(Exception):
    """No usable key set: never fetched, or the last good one is past its grace period."""


def key_fits(key: Key, alg: str) -> bool:
    """Whether `key` may verify a signature made with `alg` (type, curve, and the key's own `alg`/`use`)."""
    need = _KEY_FOR_ALG.get(alg)
    if need is None or key.key_type != need[0]:
        return False
    if need[1] is not None and key.get("crv") != need[1]:
        return False
    if key.key_type == "OKP" and key.get("crv") not in ("Ed25519", "Ed448"):
        return False
    key_alg = key.get("alg")
    if key_alg is not None and key_alg != alg:
        return False
    return key.get("use") in (None, "sig")


def parse_jwks(body: bytes, *, allow_symmetric: bool) -> dict[str | None, list[Key]]:
    """A JWKS document -> keys by `kid` (keys without kid under None). Unusable keys are skipped."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS document (no `keys` list)")
    keys: dict[str | None, list[Key]] = {}
    for item in doc["keys"]:
        if not isinstance(item, dict):
            continue
        if item.get("kty") == "oct" and not allow_symmetric:
            continue  # a shared secret is never taken from the network
        try:
            key = JWKRegistry.import_key(item)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            log.warning("skipping unusable JWK kid=%r: %s", item.get("kid"), exc)
            continue
        kid = item.get("kid") if isinstance(item.get("kid"), str) else None
        keys.setdefault(kid, []).append(key)
    if not keys:
        raise ValueError("the JWKS holds no usable key")
    return keys


class JwksCache:
    """The key set of one provider, from a URL, OIDC discovery or a local file.

    `fetch_count` counts JWKS document fetches (attempts), `discovery_count` discovery document fetches.
    """

    def __init__(
        self,
        provider: str,
        config: JwksCacheConfig,
        *,
        jwks_uri: str | None = None,
        discovery_issuer: str | None = None,
        jwks_file: Path | None = None,
        jwks_bytes: bytes | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        fetcher: Fetcher = fetch,
        metrics: IdentityMetrics | None = None,
    ) -> None:
        self.provider = provider
        self._metrics = metrics or identity_metrics(None)
        self.config = config
        self._jwks_uri = jwks_uri
        self._issuer = discovery_issuer
        self._file = jwks_file
        self._bytes = jwks_bytes
        self._now = monotonic
        self._fetch = fetcher
        self._keys: dict[str | None, list[Key]] | None = None
        self._usable_until = 0.0
        self._last_attempt = -float("inf")
        self._next_delay = config.default_ttl
        self._inflight: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._negative: OrderedDict[str, float] = OrderedDict()
        # the keys that fit each (kid, alg) asked for, worked out once per key set (`_fitting_for` is the set)
        self._fitting: dict[tuple[str | None, str], list[Key]] = {}
        self._fitting_for: dict[str | None, list[Key]] | None = None
        self.fetch_count = 0
        self.discovery_count = 0
        if jwks_file is not None or jwks_bytes is not None:  # local keys (a file, or a secret by reference)
            raw = jwks_bytes if jwks_bytes is not None else Path(str(jwks_file)).read_bytes()
            self._keys = parse_jwks(raw, allow_symmetric=True)
            self._usable_until = float("inf")

    @property
    def remote(self) -> bool:
        return self._file is None and self._bytes is None

    async def start(self) -> None:
        """Fetch the keys once (a failure is logged; requests get 503 until a fetch succeeds), then keep them
        fresh in the background."""
        if not self.remote or self._task is not None:
            return
        with contextlib.suppress(Exception):
            await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name=f"jwks-refresh-{self.provider}")

    async def close(self) -> None:
        for task in (self._task, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = None
        self._inflight = None

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._next_delay)
            with contextlib.suppress(Exception):
                await self.refresh()

    async def refresh(self) -> None:
        """Fetch the key set now; concurrent callers share one fetch. Raises on failure (old keys stay)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._do_refresh())
        await asyncio.shield(self._inflight)

    async def _do_refresh(self) -> None:
        self._last_attempt = self._now()
        try:
            uri = self._jwks_uri or await self._discover()
            self.fetch_count += 1
            response = await self._fetch(uri, timeout=self.config.timeout, max_bytes=self.config.max_bytes)
            if response.status != 200:
                raise FetchError(f"JWKS answered HTTP {response.status}")
            keys = parse_jwks(response.body, allow_symmetric=False)
        except (FetchError, ValueError) as exc:
            self._metrics.jwks_fetch.labels(self.provider, "error").inc()
            self._next_delay = max(self.config.cooldown, 1.0)
            log.warning("JWKS fetch for provider %s failed: %s", self.provider, exc)
            raise
        self._metrics.jwks_fetch.labels(self.provider, "success").inc()
        ttl = self.ttl_for(response.headers.get("cache-control", ""))
        self._keys = keys
        self._usable_until = self._now() + ttl + self.config.stale_grace
        self._next_delay = max(ttl * 0.8, 0.05)  # refresh before expiry
        self._negative.clear()

    async def _discover(self) -> str:
        """OIDC Discovery 1.0 §4: the document's `issuer` must equal the configured issuer exactly."""
        if self._issuer is None:
            raise ValueError("provider has neither jwks_uri nor discovery")
        url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        self.discovery_count += 1
        response = await self._fetch(url, timeout=self.config.timeout, max_bytes=self.config.max_bytes)
        if response.status != 200:
            raise FetchError(f"discovery answered HTTP {response.status}")
        doc = json.loads(response.body)
        if not isinstance(doc, dict) or doc.get("issuer") != self._issuer:
            raise ValueError("discovery document's issuer differs from the configured issuer")
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise ValueError("discovery document has no jwks_uri")
        if uri.startswith("http://") and not self._issuer.startswith("http://"):
            raise ValueError("discovery downgraded jwks_uri to plain http")
        self._jwks_uri = uri
        return uri

    def ttl_for(self, cache_control: str) -> float:
        """RFC 9111 §5.2.2.1 max-age, bounded by [min_ttl, max_ttl]; no-store/no-cache count as min_ttl."""
        lowered = cache_control.lower()
        match = _MAX_AGE.search(cache_control)
        if "no-store" in lowered or "no-cache" in lowered:
            ttl = self.config.min_ttl
        elif match:
            ttl = float(match.group(1))
        else:
            ttl = self.config.default_ttl
        return min(max(ttl, self.config.min_ttl), self.config.max_ttl)

    def _cooled_down(self) -> bool:
        return self._now() - self._last_attempt >= self.config.cooldown

    async def _try_refresh(self) -> None:
        """Refetch if a fetch is already running (join it) or the cooldown has passed; swallow failures."""
        if (self._inflight is not None and not self._inflight.done()) or self._cooled_down():
            with contextlib.suppress(Exception):
                await self.refresh()

    async def keys_for(self, kid: str | None, alg: str) -> list[Key]:
        """Candidate keys for a token's `kid` and `alg`. The kid is only ever a dictionary key here."""
        if self._keys is None or self._now() > self._usable_until:
            await self._try_refresh()
            if self._keys is None or self._now() > self._usable_until:
                raise JwksUnavailable(f"provider {self.provider}: no usable JWKS")
        if kid is None:
            return self._fit(None, alg, [k for group in self._keys.values() for k in group])
        group = self._keys.get(kid)
        if group is None and self.remote:
            until = self._negative.get(kid)
            if until is not None and until > self._now():
                return []
            await self._try_refresh()  # OIDC Core §10.1.1: an unknown kid may mean the keys rotated
            group = self._keys.get(kid) if self._keys is not None else None
            if group is None:
                self._negative[kid] = self._now() + self.config.cooldown
                self._negative.move_to_end(kid)
                while len(self._negative) > _NEGATIVE_MAX:
                    self._negative.popitem(last=False)
                return []
        return self._fit(kid, alg, group) if group else []

    def _fit(self, kid: str | None, alg: str, candidates: list[Key]) -> list[Key]:
        """The candidates that fit `alg`, remembered for the current key set (a new set forgets them). Bounded:
        only kids of the set are remembered, and algorithms are the caller's allowlist. Callers must not change
        the list returned."""
        if self._fitting_for is not self._keys:
            self._fitting = {}
            self._fitting_for = self._keys
        fitting = self._fitting.get((kid, alg))
        if fitting is None:
            fitting = [k for k in candidates if key_fits(k, alg)]
            if len(self._fitting) < _FITTING_MAX:
                self._fitting[(kid, alg)] = fitting
        return fitting

    def snapshot(self) -> dict[str, Any]:
        """For health/readiness: whether keys are usable and how many fetches happened."""
        ready = self._keys is not None and self._now() <= self._usable_until
        return {"provider": self.provider, "ready": ready, "fetches": self.fetch_count}
