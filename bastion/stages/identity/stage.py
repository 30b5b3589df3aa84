"""The identity stage of one route: find the credential, verify it, map it to a consumer, check revocation,
and hand a verified `Identity` (and upstream headers) to the rest of the pipeline.

Errors follow RFC 6750 §3: 401 with `WWW-Authenticate: Bearer realm="bastion", error="invalid_token"`, no
`error` attribute when no credential was sent (§3.1), 400 `invalid_request` for a malformed or duplicated
credential, 403 for a valid identity that may not call (unknown or disabled consumer).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

from bastion.cache import BoundedCache
from bastion.context import Continue, Decision, Deny, Identity, RequestContext
from bastion.stages.base import RouteInfo
from bastion.stages.identity.challenge import StepUp
from bastion.stages.identity.config import IdentityPolicy
from bastion.stages.identity.consumers import Consumer
from bastion.stages.identity.jwt import TokenRejected, VerifiedToken, header_value
from bastion.stages.identity.mtls import bound_to
from bastion.stages.identity.revocation import StateRevocationList
from bastion.stages.identity.shared import IdentityShared
from bastion.stages.identity.tokencache import Credential, token_key
from bastion.state import StateUnavailable

REALM = "bastion"
# RFC 6750 §2.1: "Bearer" (any case), 1*SP, a token68 (b64token). The scheme is compared by hand, and the
# token checked with one `bytes.translate` pass: a regular expression over a whole JWT costs ~20 K instructions.
_TOKEN68_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


def is_token68(token: str) -> bool:
    """Whether `token` is an RFC 7235 §2.1 token68: one or more of ALPHA, DIGIT and `-._~+/`, then any `=`."""
    if not token.isascii():
        return False
    raw = token.encode("ascii").rstrip(b"=")
    return bool(raw) and not raw.translate(None, _TOKEN68_CHARS)
_DETAIL = {
    400: "The request carries a malformed credential.",
    401: "The credential is missing or invalid.",
    403: "The caller is not allowed to use this API.",
    503: "The identity provider is unavailable; try again later.",
}


class IdentityStage:
    """Authenticates the caller of one route with the methods its effective policy accepts."""

    control = "identity"
    needs_body = False

    def __init__(self, policy: IdentityPolicy, route: RouteInfo, shared: IdentityShared) -> None:
        self._shared = shared
        self._methods = frozenset(policy.methods)
        self._jwt = "jwt" in self._methods
        self._introspect = "introspection" in self._methods and shared.introspection is not None
        self._bearer = self._jwt or "introspection" in self._methods
        self._api_key = "api_key" in self._methods
        self._mtls = "mtls" in self._methods
        self._required = policy.required
        self._require_consumer = policy.require_consumer
        self._query_token = policy.allow_query_token
        self._query_key = policy.allow_query_api_key
        self._forward = policy.forward_credential
        self._require_bound = policy.require_bound_tokens
        self._key_header = policy.api_key_header
        self._revocation_open = policy.on_revocation_unavailable == "open"
        self._policy = route.policy_id("identity")
        # the allow of every request this route lets through: one value, built once (a frozen dataclass costs
        # ~8 K instructions to build, every request)
        self._allow = Continue(self._policy)
        # The credential made for a token verified by introspection (whose cache is its own), keyed by the verified
        # token's id (checked by identity): as big and as long-lived as the token cache. A JWT's credential lives
        # in the token cache itself.
        cache = shared.token_cache
        self._introspected: BoundedCache[int, tuple[VerifiedToken, Credential]] = BoundedCache(
            cache.max_entries, cache.max_ttl)
        store = shared.revocation_store
        # the deny list this process may skip when it is known to be empty (no await, no coroutine)
        self._store: StateRevocationList | None = store if shared.revocations is store else None
        self._pid = {name: route.policy_id(f"identity.{name}") for name in IdentityPolicy.model_fields}
        self._scheme = "ApiKey" if self._api_key and not self._bearer else "Bearer"

    # --- responses

    def _deny(self, status: int, reason: str, policy: str, log_detail: str = "") -> Deny:
        headers: tuple[tuple[str, str], ...] = ()
        if status == 401:
            error = ', error="invalid_token"' if reason not in _MISSING else ""
            headers = (("www-authenticate", f'{self._scheme} realm="{REALM}"{error}'),)
        elif status == 400:
            headers = (("www-authenticate", f'{self._scheme} realm="{REALM}", error="invalid_request"'),)
        return Deny(status, reason, self._pid.get(policy, self._policy), _DETAIL.get(status),
                    headers, log_detail or reason)

    def _rejected(self, exc: TokenRejected) -> Deny:
        return self._deny(exc.status, exc.reason, "methods", exc.log_detail)

    # --- extraction

    def _extract(self, ctx: RequestContext, now: float) -> _Found | Deny | None:
        """(kind, value, source, cache key, cached credential) of the one credential sent, a 400 Deny, or None
        when none was sent.

        A bearer token in the Authorization header is looked up in the verified-token cache here (the lookup
        `_token` would make anyway): a token found there passed the token68 syntax check when it was verified
        (every cached JWT matched the stricter compact-JWS syntax), so it is not scanned again.
        """
        found: list[tuple[str, str, str]] = []
        key: bytes | None = None
        hit: Credential | None = None
        if self._bearer:
            values = ctx.header_values("authorization")
            if len(values) > 1:
                return self._deny(400, "credential_duplicate", "methods", "several Authorization headers")
            for value in values:
                token = value[7:].strip(" ") if value[:7].lower() == "bearer " else None
                if token is not None and self._jwt and token:
                    key = token_key(token)
                    hit = self._shared.token_cache.get(key, now)
                if token is not None and (hit is not None or is_token68(token)):
                    found.append(("bearer", token, "header"))
                elif value.lstrip().lower().startswith("bearer"):
                    return self._deny(400, "credential_malformed", "methods", "bad Bearer syntax")
        if self._api_key:
            keys = ctx.header_values(self._key_header)
            if len(keys) > 1:
                return self._deny(400, "credential_duplicate", "methods", "several API key headers")
            found += [("api_key", k.strip(), "header") for k in keys]
        query = ctx.query
        if query and ("access_token" in query or "api_key" in query):
            for name, value in parse_qsl(query, keep_blank_values=True):
                if name == "access_token" and self._bearer:
                    if not self._query_token:  # RFC 6750 §5.3: tokens in URLs end up in logs
                        return self._deny(400, "query_token_not_allowed", "allow_query_token")
                    found.append(("bearer", value, "query"))
                    if not self._forward:
                        ctx.drop_query_params.add(name)
                elif name == "api_key" and self._api_key:
                    if not self._query_key:
                        return self._deny(400, "query_api_key_not_allowed", "allow_query_api_key")
                    found.append(("api_key", value, "query"))
                    if not self._forward:
                        ctx.drop_query_params.add(name)
        if len(found) > 1:  # RFC 6750 §2: a client MUST NOT use more than one method per request
            return self._deny(400, "credential_duplicate", "methods",
                              "credentials in: " + ", ".join(f"{k}/{s}" for k, _, s in found))
        if not found:
            return None
        kind, value, source = found[0]
        if source != "header" or kind != "bearer":  # the lookup above was for the header's token only
            key, hit = None, None
        return kind, value, source, key, hit

    # --- check

    async def check(self, ctx: RequestContext) -> Decision:
        now = self._shared.wall_clock()
        found = self._extract(ctx, now)
        if isinstance(found, Deny):
            return found
        if found is None:
            if self._mtls and ctx.peer_cert is not None:
                return await self._certificate(ctx)
            if not self._required:
                ctx.identity = Identity(method="anonymous")
                ctx.upstream_headers.append(("x-bastion-auth-method", "anonymous"))
                return self._allow
            reason = "jwt_missing" if self._methods == {"jwt"} else "credential_missing"
            return self._deny(401, reason, "required")
        kind, value, source, key, hit = found
        if kind == "api_key":
            return await self._key(ctx, value, source)
        return await self._token(ctx, value, source, now, key, hit)

    async def _token(self, ctx: RequestContext, token: str, source: str, now: float, key: bytes | None,
                     credential: Credential | None) -> Decision:
        """A bearer token: `key` and `credential` are the header token's cache key and cached credential."""
        shared = self._shared
        if key is None and self._jwt:  # a query token: not looked up yet
            key = token_key(token)
            credential = shared.token_cache.get(key, now)
        if credential is not None:  # verified before and not expired: no await, no signature check, no new object
            shared.metrics.lookup(True, now)
        else:
            try:
                credential = await self._verify(token, key, now)
            except TokenRejected as exc:
                return self._rejected(exc)
        # RFC 8705 §3: a bound token is only good over a connection with that very certificate
        if credential.thumbprint is not None:
            if not bound_to(credential.thumbprint, ctx.peer_cert):
                return self._deny(401, "token_binding_mismatch", "methods",
                                  "cnf.x5t#S256 does not match the connection's client certificate")
        elif self._require_bound:
            return self._deny(401, "token_not_bound", "require_bound_tokens")
        consumer = credential.consumer
        if credential.revoked:
            return self._deny(401, "credential_revoked", "methods", f"consumer {consumer and consumer.name} "
                              "credential mapping is revoked")
        return await self._finish(ctx, credential.identity, consumer, credential.issued_at, "authorization" if
                                  source == "header" else None, credential.upstream)

    async def _verify(self, token: str, key: bytes | None, now: float) -> Credential:
        """A token not in the cache (`key`: its cache key when JWTs are accepted)."""
        shared = self._shared
        if key is not None:
            shared.metrics.lookup(False, now)
            try:
                verified = await shared.verifier.verify(token)
            except TokenRejected as exc:
                # an opaque token, or a JWT of an issuer we only know through introspection
                if not self._introspect or exc.reason not in ("jwt_malformed", "jwt_bad_issuer"):
                    raise
            else:
                credential = credential_for(verified, shared)
                shared.token_cache.put(key, credential, now, verified.expires)
                return credential
        if self._introspect:
            verified = await shared.introspection.verify(token)
            made = self._introspected.get(id(verified), now)
            if made is not None and made[0] is verified:
                return made[1]
            credential = credential_for(verified, shared)
            self._introspected.put(id(verified), (verified, credential), now, verified.expires)
            return credential
        raise TokenRejected("introspection_unavailable", "no introspection provider configured", 503)

    async def _key(self, ctx: RequestContext, key: str, source: str) -> Decision:
        shared = self._shared
        match = shared.consumers.api_key(key, datetime.fromtimestamp(shared.wall_clock(), UTC))
        if match.consumer is None:
            return self._deny(401, match.reason, "methods", f"{match.reason} (key id {match.key_id})")
        consumer = match.consumer
        identity = Identity(method="api_key", subject=consumer.name, consumer=consumer.name,
                            roles=consumer.roles, credential_id=match.key_id)
        return await self._finish(ctx, identity, consumer, None,
                                  self._key_header if source == "header" else None, upstream_headers(identity, ()))

    async def _certificate(self, ctx: RequestContext) -> Decision:
        shared = self._shared
        if self._require_bound:
            return self._deny(401, "token_not_bound", "require_bound_tokens", "a client certificate alone "
                              "is not a bound token")
        info = shared.certs.parse(ctx.peer_cert or b"")
        consumer, revoked = shared.consumers.for_certificate(info)
        if revoked:
            return self._deny(401, "credential_revoked", "methods", f"certificate {info.x5t_s256} is revoked")
        if consumer is None:
            return self._deny(403, "consumer_unknown", "methods",
                              f"no consumer for certificate {info.subject} ({info.x5t_s256})")
        identity = Identity(method="mtls", subject=info.subject, consumer=consumer.name, roles=consumer.roles,
                            credential_id=info.x5t_s256)
        return await self._finish(ctx, identity, consumer, None, None, upstream_headers(identity, ()))

    async def _finish(self, ctx: RequestContext, identity: Identity, consumer: Consumer | None,
                      issued_at: float | None, credential_header: str | None,
                      upstream: tuple[tuple[str, str], ...]) -> Decision:
        if consumer is not None:
            if consumer.disabled:
                return self._deny(403, "consumer_disabled", "require_consumer", f"consumer {consumer.name}")
            if not consumer.allows_ip(ctx.client_ip):
                return self._deny(403, "consumer_network_denied", "require_consumer",
                                  f"consumer {consumer.name} from {ctx.client_ip}")
        elif self._require_consumer:
            return self._deny(403, "consumer_unknown", "require_consumer",
                              f"no consumer for {identity.method} subject {identity.subject!r}")
        # checked on every request, cache hit or not; a deny list that cannot answer is a "no" unless the
        # class accepts the risk (identity.on_revocation_unavailable: open)
        store = self._store
        try:
            revoked = None if store is not None and store.nothing_revoked else await self._shared.revocations.find(
                identity.credential_id, identity.subject, identity.consumer, issued_at)
        except StateUnavailable as exc:
            if not self._revocation_open:
                return self._deny(503, "revocation_unavailable", "on_revocation_unavailable",
                                  f"deny list unavailable: {exc}")
            revoked = None
        if revoked is not None:
            detail = (f"revoked: jti={identity.credential_id} sub={identity.subject} "
                      f"consumer={identity.consumer} by {revoked.source or 'admin'}")
            step_up = StepUp.from_source(revoked.source)
            if step_up is not None:  # RFC 9470 §3: re-authenticate at this level, not just a fresh token
                return Deny(401, "step_up_required", self._pid["methods"], _DETAIL.get(401),
                            (("www-authenticate", step_up.challenge(self._scheme, REALM)),), detail)
            return self._deny(401, "credential_revoked", "methods", detail)  # RFC 6750 §3.1 invalid_token
        ctx.identity = identity
        ctx.upstream_headers.extend(upstream)
        if credential_header is not None and not self._forward:
            ctx.drop_upstream_headers.add(credential_header)
        return self._allow


_MISSING = frozenset({"jwt_missing", "credential_missing"})
# what `_extract` found: kind, value, source, the header token's cache key and its cached credential
_Found = tuple[str, str, str, bytes | None, Credential | None]


def upstream_headers(identity: Identity, claim_headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The identity headers sent upstream, in order: method, consumer, subject (when it can be sent safely), then
    the provider's claim headers."""
    headers = [("x-bastion-auth-method", identity.method)]
    if identity.consumer is not None:
        headers.append(("x-bastion-consumer", identity.consumer))
    subject = header_value(identity.subject)
    if subject is not None:
        headers.append(("x-bastion-subject", subject))
    headers.extend(claim_headers)
    return tuple(headers)


def credential_for(verified: VerifiedToken, shared: IdentityShared) -> Credential:
    """The credential of a verified token: its consumer (fixed for the life of `shared`'s consumer index), the
    immutable `Identity`, the upstream headers. Made once per verified token, shared by every request with it."""
    consumer, revoked = shared.consumers.for_token(verified.provider, verified.client_id, verified.subject)
    identity = Identity(
        method=verified.method, subject=verified.subject, consumer=consumer.name if consumer else None,
        issuer=verified.issuer, claims=verified.claims, scopes=verified.scopes,
        roles=verified.roles | consumer.roles if consumer else verified.roles, credential_id=verified.jti,
    )
    return Credential(identity, consumer, revoked, verified.issued_at, verified.expires, verified.cnf_x5t,
                      upstream_headers(identity, verified.headers))
