"""The GraphQL stage: one body stage per GraphQL route, checking each operation before the upstream sees it.

Order of the checks, cheapest first: batch size, query length, persisted-query allowlist, parse (token limit),
document validity (fragments), depth, cost, aliases, directives, introspection, GET safety, operation scopes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from graphql.error import GraphQLSyntaxError
from graphql.language import DocumentNode, Lexer, Source, TokenKind
from graphql.language.parser import Parser

from bastion.context import Continue, ControlRecord, Decision, Deny, RequestContext
from bastion.stages.authz.scopes import challenge
from bastion.stages.base import RouteInfo, Services
from bastion.stages.graphql import request as http
from bastion.stages.graphql.analysis import COST_CAP, Analysis, DocumentError, Measure, analyse
from bastion.stages.graphql.config import GraphqlPolicy

# Public sentences per reason; the audit's log_detail adds the limit and the measured value.
DETAIL = {
    "graphql_query_too_long": "The GraphQL query is too long.",
    "graphql_too_many_tokens": "The GraphQL query has too many tokens.",
    "graphql_depth_exceeded": "The GraphQL query is nested too deeply.",
    "graphql_cost_exceeded": "The GraphQL query asks for too much data (cost budget exceeded).",
    "graphql_aliases_exceeded": "The GraphQL request uses too many aliases.",
    "graphql_directives_exceeded": "The GraphQL request uses too many directives.",
    "graphql_introspection_disabled": "GraphQL introspection is disabled on this API.",
    "graphql_query_not_persisted": "Only persisted GraphQL queries are accepted on this API.",
    "graphql_persisted_hash_mismatch": "The persisted-query hash does not match the query.",
    "graphql_mutation_over_get": "Only query operations may be sent with GET; use POST.",
    "graphql_identity_required": "This GraphQL operation requires an authenticated caller.",
    "graphql_insufficient_scope": "The caller lacks a scope this GraphQL operation requires.",
}


class DocumentCache:
    """Parsed documents by exact query text, shared by every GraphQL route of a config load.

    Clients send the same few query texts over and over, and parsing is most of the stage's cost. Each entry
    keeps the token count (comments included), so a route with a lower `max_tokens` than the one that parsed
    the text still refuses it. Bounded: at most `entries` documents of at most `max_chars` characters each
    (an AST is some tens of times its text), evicting the least recently used; failed parses are not kept."""

    def __init__(self, entries: int = 256, max_chars: int = 4096) -> None:
        self.entries = entries
        self.max_chars = max_chars
        self._docs: OrderedDict[str, tuple[DocumentNode, int]] = OrderedDict()

    def get(self, query: str) -> tuple[DocumentNode, int] | None:
        found = self._docs.get(query)
        if found is not None:
            self._docs.move_to_end(query)
        return found

    def put(self, query: str, doc: DocumentNode, tokens: int) -> None:
        if len(query) > self.max_chars:
            return
        self._docs[query] = (doc, tokens)
        if len(self._docs) > self.entries:
            self._docs.popitem(last=False)


def prepare(config: Any, services: Services) -> DocumentCache:
    """One document cache per config load (a reload starts empty)."""
    return DocumentCache()


def is_graphql_route(policy: GraphqlPolicy, route: RouteInfo) -> bool:
    """`enabled: true`, or `auto` and the route's path ends in `/graphql`."""
    if policy.enabled == "auto":
        return route.path.rstrip("/").rsplit("/", 1)[-1] == "graphql"
    return policy.enabled is True


def build(policy: GraphqlPolicy, route: RouteInfo, shared: DocumentCache | None = None) -> GraphqlStage | None:
    """The stage for a GraphQL route, or None for every other route."""
    if not is_graphql_route(policy, route):
        return None
    return GraphqlStage(policy, route, shared if shared is not None else DocumentCache())


class GraphqlStage:
    """Limits on the GraphQL operations of one route; runs on the buffered body (and on GET query strings)."""

    control = "graphql"
    needs_body = True

    def __init__(self, policy: GraphqlPolicy, route: RouteInfo, cache: DocumentCache) -> None:
        self.policy = policy
        self.cache = cache
        self.route = route
        self.measure = Measure(frozenset(policy.list_arguments), policy.default_list_size, policy.max_depth,
                               policy.max_cost)
        self.persisted = frozenset(policy.persisted_queries)
        self.scopes = policy.scopes_by_name()
        self.pid = {name: route.policy_id(f"graphql.{name}") for name in GraphqlPolicy.model_fields}
        self.pid["enabled"] = route.policy_id("graphql")
        self._allow = Continue(self.pid["enabled"])

    def _deny(self, reason: str, control: str, log: str, status: int = 400, detail: str | None = None,
              headers: tuple[tuple[str, str], ...] = ()) -> Deny:
        return Deny(status, reason, self.pid[control], detail or DETAIL[reason], headers,
                    f"{self.route.route_id}: {log}")

    async def check(self, ctx: RequestContext) -> Decision:
        policy = self.policy
        try:
            requests, batch = http.read(ctx, policy.max_batch)
        except http.RequestError as exc:
            control = "max_batch" if exc.reason == "graphql_batch_exceeded" else "enabled"
            headers = (("accept-post", "application/json, application/graphql"),) if exc.status == 415 else ()
            return self._deny(exc.reason, control, f"{exc.why} (max_batch {policy.max_batch})"
                              if control == "max_batch" else exc.why, exc.status, exc.why, headers)
        cost = aliases = directives = 0
        for number, req in enumerate(requests):
            where = f"batch entry {number}: " if batch else ""
            outcome = self._document(ctx, req, where)
            if isinstance(outcome, Deny):
                return outcome
            cost = min(cost + outcome.cost, COST_CAP)
            aliases += outcome.aliases
            directives += outcome.directives
            if cost > policy.max_cost:
                return self._deny("graphql_cost_exceeded", "max_cost",
                                  f"{where}cost {_at_least(cost)} > max_cost {policy.max_cost}")
            if aliases > policy.max_aliases:
                return self._deny("graphql_aliases_exceeded", "max_aliases",
                                  f"{where}aliases {aliases} > max_aliases {policy.max_aliases}")
            if directives > policy.max_directives:
                return self._deny("graphql_directives_exceeded", "max_directives",
                                  f"{where}directives {directives} > max_directives {policy.max_directives}")
            deny = self._semantics(ctx, req, outcome, where)
            if deny is not None:
                return deny
        return self._allow

    def _document(self, ctx: RequestContext, req: http.GraphqlRequest, where: str) -> Analysis | Deny:
        """Length, persisted-query allowlist, parse and measure one request's document."""
        policy = self.policy
        if len(req.query) > policy.max_query_length:
            return self._deny("graphql_query_too_long", "max_query_length",
                              f"{where}query length {len(req.query)} > max_query_length {policy.max_query_length}")
        if req.persisted_hash is not None or self.persisted or policy.persisted_only:
            digest = hashlib.sha256(req.query.encode("utf-8")).hexdigest()
            if req.persisted_hash is not None and req.persisted_hash != digest:
                return self._deny("graphql_persisted_hash_mismatch", "persisted_only",
                                  f"{where}sha256 {digest} but extensions.persistedQuery.sha256Hash "
                                  f"{req.persisted_hash}")
            if digest not in self.persisted:
                if policy.persisted_only:
                    return self._deny("graphql_query_not_persisted", "persisted_only",
                                      f"{where}sha256 {digest} not in persisted_queries ({len(self.persisted)})")
                if self.persisted:  # rollout: recorded, let through
                    ctx.records.append(ControlRecord("graphql.persisted_only", "detect", self.pid["persisted_only"],
                                                     "graphql_query_not_persisted"))
        cached = self.cache.get(req.query)
        if cached is None:
            parsed = self._parse(req.query, where)
            if isinstance(parsed, Deny):
                return parsed
            doc, tokens = parsed
            self.cache.put(req.query, doc, tokens)
        else:
            doc, tokens = cached
        if tokens > policy.max_tokens:  # parsed for a route with a higher limit
            return self._too_many_tokens(f"{where}{tokens} tokens")
        try:
            return analyse(doc, req.variables, self.measure)
        except DocumentError as exc:
            if exc.reason == "graphql_depth_exceeded":
                return self._deny(exc.reason, "max_depth",
                                  f"{where}depth > max_depth {policy.max_depth} (the walk stops at the limit)")
            return self._deny(exc.reason, "enabled", f"{where}{exc.why}", detail=exc.why)

    def _parse(self, query: str, where: str) -> tuple[DocumentNode, int] | Deny:
        """graphql-core's parser, stopped at `max_tokens` (comments count: a comment-padded document is tokens
        the lexer allocates all the same)."""
        limit = self.policy.max_tokens
        parser = Parser(Source(query), no_location=True, max_tokens=limit)
        try:
            return parser.parse_document(), parser.token_count
        except GraphQLSyntaxError as exc:
            if count_tokens(query, limit) > limit:
                return self._too_many_tokens(f"{where}more than {limit} tokens")
            return self._deny("graphql_syntax_error", "enabled", f"{where}{exc.message}", detail=exc.message)
        except RecursionError:
            pass  # answered below, outside the handler, so the deny does not hold the deep traceback
        why = "The document is nested too deeply to be parsed."
        return self._deny("graphql_syntax_error", "enabled", f"{where}{why}", detail=why)

    def _too_many_tokens(self, measured: str) -> Deny:
        return self._deny("graphql_too_many_tokens", "max_tokens",
                          f"{measured} > max_tokens {self.policy.max_tokens} (comments included)")

    def _semantics(self, ctx: RequestContext, req: http.GraphqlRequest, found: Analysis,
                   where: str) -> Deny | None:
        """Introspection, operations over GET, and operation scopes."""
        if found.introspection is not None and not self.policy.introspection:
            return self._deny("graphql_introspection_disabled", "introspection",
                              f"{where}field {found.introspection} with introspection: false")
        try:
            selected = found.selected(req.operation_name)
        except DocumentError as exc:
            return self._deny(exc.reason, "enabled", f"{where}{exc.why}", detail=exc.why)
        if ctx.method in ("GET", "HEAD") and selected.kind != "query":
            # GraphQL over HTTP §6.2.1 (GET): a mutation over GET is a CSRF vector and must not run
            return self._deny("graphql_mutation_over_get", "enabled", f"{where}{selected.kind} over {ctx.method}",
                              405, headers=(("allow", "POST"),))
        if self.scopes:
            needed: set[str] = set()
            named: list[str] = []
            for op in found.operations:  # every operation: the server might pick another than operationName says
                for name in ({op.name} if op.name else set()) | op.root_fields:
                    if name in self.scopes:
                        needed |= self.scopes[name]
                        named.append(name)
            if needed:
                identity = ctx.identity
                if identity is None or identity.method == "anonymous":
                    return self._deny("graphql_identity_required", "operation_scopes",
                                      f"{where}{', '.join(sorted(set(named)))} need scopes and the caller is "
                                      "anonymous", 401, headers=challenge())
                missing = needed - identity.scopes
                if missing:
                    return self._deny("graphql_insufficient_scope", "operation_scopes",
                                      f"{where}{', '.join(sorted(set(named)))} need "
                                      f"[{' '.join(sorted(needed))}]; missing [{' '.join(sorted(missing))}]; "
                                      f"granted [{' '.join(sorted(identity.scopes))}]", 403,
                                      headers=challenge(tuple(sorted(needed)), insufficient=True))
        return None


def count_tokens(query: str, limit: int) -> int:
    """Tokens of `query`, comments included, counted up to `limit + 1`; used only once parsing failed, to tell
    the token limit from a syntax error without reading the parser's message."""
    lexer = Lexer(Source(query))
    count = 0
    try:
        while count <= limit:
            token = lexer.advance()
            comment = token.prev
            while comment is not None and comment.kind is TokenKind.COMMENT:
                count += 1
                comment = comment.prev
            if token.kind is TokenKind.EOF:
                break
            count += 1
    except GraphQLSyntaxError:
        pass
    return count


def _at_least(value: int) -> str:
    return f"at least {value}" if value >= COST_CAP else str(value)


__all__ = ["DETAIL", "DocumentCache", "GraphqlStage", "build", "count_tokens", "is_graphql_route", "prepare"]
