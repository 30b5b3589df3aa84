"""Object-level authorisation (OWASP API1:2023, BOLA): the object id a request names belongs to its caller.

An id comes from a path parameter, every value of a query parameter (`?account=mine&account=yours` is checked
twice, so parameter pollution cannot smuggle a second id past the rule), a header, or a JSON body field
(RFC 6901 pointer; a body with duplicate keys is refused, since the upstream may read the other copy). It is
then bound to the caller: equal to a claim, the subject, the consumer or the consumer's tenant, one of a list
claim, or confirmed by an ownership service.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from bastion.context import Identity, RequestContext
from bastion.stages.authz.cache import DecisionCache
from bastion.stages.authz.client import HttpClient
from bastion.stages.authz.config import OwnerLookup, OwnerRule
from bastion.stages.base import RouteInfo


class BodyError(ValueError):
    """The body is not JSON the owner rule can read."""


@dataclass(frozen=True, slots=True)
class OwnerOutcome:
    """`ok`, or why not: `reason` is the stable code, `log` the operator's sentence, `status` 403 or 503."""

    ok: bool
    reason: str = ""
    log: str = ""
    status: int = 403
    fail_open: bool = False


OK = OwnerOutcome(True)


def _scalar(value: Any) -> str | None:
    """Ids compare as strings; a number claim `42` matches the path `42`. Booleans and objects never match."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """`realm.accounts` -> claims["realm"]["accounts"] (a claim literally named `realm.accounts` first)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BodyError(f"duplicate key {key!r} in the JSON body")
        out[key] = value
    return out


def parse_body(body: bytes | None) -> Any:
    """The JSON document, refusing duplicate keys (the upstream's parser may keep the other one)."""
    if not body:
        raise BodyError("no body")
    try:
        return json.loads(body, object_pairs_hook=_no_duplicates)
    except BodyError:
        raise
    except (ValueError, RecursionError) as exc:
        raise BodyError(f"the body is not JSON ({exc.__class__.__name__})") from None


def pointer(doc: Any, ptr: str) -> Any:
    """RFC 6901 JSON pointer; raises KeyError when it points nowhere."""
    if ptr == "":
        return doc
    for raw in ptr[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict):
            doc = doc[token]
        elif isinstance(doc, list) and token.isdigit() and (token == "0" or not token.startswith("0")):
            doc = doc[int(token)]
        else:
            raise KeyError(token)
    return doc


class OwnerCheck:
    """One owner rule of one route, ready to run."""

    def __init__(self, rule: OwnerRule, route: RouteInfo, tenants: dict[str, str]) -> None:
        self.rule = rule
        kind, _, name = rule.source.partition(".")
        self.kind = kind
        self.name = name.lower() if kind == "header" else name
        if kind == "path" and name not in route.path_params:
            raise ValueError(f"owner rule reads path.{name} but route {route.route_id} ({route.path}) has no "
                             f"parameter {{{name}}}")
        self._tenants = tenants

    def describe(self) -> str:
        rule = self.rule
        if rule.lookup is not None:
            how = f"lookup {rule.lookup.url} (on_error {rule.lookup.on_error})"
        elif rule.equals is not None:
            how = f"equals {rule.equals}"
        else:
            how = f"in {rule.within}"
        return f"{rule.source} {how}" + (" (optional)" if rule.optional else "")

    def ids(self, ctx: RequestContext, doc: Any = None) -> list[str | None]:
        """Every id the request gives in this rule's place (None: one that is not a string or integer)."""
        if self.kind == "path":
            value = ctx.path_params.get(self.name)
            return [] if value is None else [value]
        if self.kind == "query":
            return [v for k, v in parse_qsl(ctx.query, keep_blank_values=True) if k == self.name]
        if self.kind == "header":
            return list(ctx.header_values(self.name))
        try:
            return [_scalar(pointer(doc, self.name))]
        except (KeyError, IndexError):
            return []

    def allowed_ids(self, identity: Identity) -> tuple[frozenset[str], str]:
        """The ids the caller owns by the token or consumer (equals/in), with where they came from."""
        ref = self.rule.equals or self.rule.within or ""
        if ref.startswith("claim:"):
            value = claim_at(identity.claims, ref[6:])
        elif ref == "subject":
            value = identity.subject
        elif ref == "consumer":
            value = identity.consumer
        else:  # consumer_tenant
            value = self._tenants.get(identity.consumer or "")
        if self.rule.within is not None:
            items = value if isinstance(value, list) else []
            return frozenset(s for s in map(_scalar, items) if s is not None), ref
        one = _scalar(value)
        return (frozenset((one,)) if one is not None else frozenset()), ref

    async def check(self, ctx: RequestContext, owners: OwnerLookups, doc: Any = None) -> OwnerOutcome:
        identity = ctx.identity
        ids = self.ids(ctx, doc)
        if not ids:
            if self.rule.optional:
                return OK
            return OwnerOutcome(False, "object_id_missing", f"no object id at {self.rule.source}")
        if identity is None or identity.method == "anonymous":
            return OwnerOutcome(False, "identity_required", f"owner rule on {self.rule.source} needs a caller",
                                401)
        if self.rule.lookup is not None:
            result = OK
            for object_id in ids:
                if object_id is None:
                    return OwnerOutcome(False, "owner_mismatch", f"{self.rule.source} is not a string or integer")
                outcome = await owners.ask(self.rule.lookup, object_id, identity, self.rule.source)
                if not outcome.ok:
                    return outcome
                if outcome.fail_open:
                    result = outcome
            return result
        allowed, ref = self.allowed_ids(identity)
        for object_id in ids:
            if object_id is None or object_id not in allowed:
                shown = "a non-scalar value" if object_id is None else repr(object_id)
                return OwnerOutcome(False, "owner_mismatch",
                                    f"{self.rule.source} = {shown} is not the caller's ({ref} of subject "
                                    f"{identity.subject!r}, consumer {identity.consumer!r})")
        return OK


class OwnerLookups:
    """Ownership service calls, one bounded cache per lookup config (shared by the routes that use it)."""

    def __init__(self, client: HttpClient, clock: Any) -> None:
        self._client = client
        self._clock = clock
        self._caches: dict[str, DecisionCache[bool]] = {}

    def cache(self, lookup: OwnerLookup) -> DecisionCache[bool]:
        key = lookup.model_dump_json()
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = DecisionCache(lookup.cache_ttl, lookup.cache_size, self._clock)
        return cache

    async def ask(self, lookup: OwnerLookup, object_id: str, identity: Identity, source: str) -> OwnerOutcome:
        subject = identity.subject or identity.consumer
        if not subject:
            return OwnerOutcome(False, "owner_mismatch", "the ownership lookup needs a subject or consumer")
        query = {"object": object_id, "subject": subject}
        if identity.consumer:
            query["consumer"] = identity.consumer
        url = f"{lookup.url}?{urlencode(query)}"

        async def fetch() -> bool:
            answer = await self._client.request("GET", url, timeout=lookup.timeout, max_bytes=16 * 1024)
            if answer.status == 200:
                try:
                    doc = orjson.loads(answer.body)
                except orjson.JSONDecodeError:
                    raise ValueError("the ownership service's answer is not JSON") from None
                return isinstance(doc, dict) and doc.get("allowed") is True
            if answer.status in (403, 404):  # a clear "not theirs" / "no such object"
                return False
            raise ValueError(f"the ownership service answered {answer.status}")

        try:
            allowed, _ = await self.cache(lookup).get((object_id, subject, identity.consumer), fetch)
        except Exception as exc:  # timeout, refused, malformed: the service could not say yes
            why = f"ownership lookup for {source} = {object_id!r} failed: {exc}"
            if lookup.on_error == "open":
                return OwnerOutcome(True, "ownership_unavailable", why, fail_open=True)
            return OwnerOutcome(False, "ownership_unavailable", why, 503)
        if allowed:
            return OK
        return OwnerOutcome(False, "owner_mismatch", f"the ownership service says {source} = {object_id!r} is "
                            f"not {subject!r}'s")
