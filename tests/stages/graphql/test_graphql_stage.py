"""The GraphQL stage, request in, decision out (bastion/stages/graphql/stage.py).

No conftest.py in this directory: other test directories import their helpers with `from conftest import ...`,
and a second non-package conftest module would shadow theirs. No __init__.py either: a test package named
`graphql` would shadow graphql-core.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from graphql import parse

from bastion.context import Continue, Decision, Deny, Identity, RequestContext
from bastion.stages.base import RouteInfo
from bastion.stages.graphql import GraphqlPolicy, build, prepare
from bastion.stages.graphql.stage import DocumentCache

ROUTE = RouteInfo(api="shop", route="graphql", klass="public", path="/graphql", methods=frozenset({"GET", "POST"}))


def gql_request(body: Any = None, *, method: str = "POST", query: str = "", content_type: str = "application/json",
                scopes: tuple[str, ...] | None = None, raw: bytes | None = None) -> RequestContext:
    """A request as the server hands it to body stages: `body` as JSON, or `raw` bytes, or nothing (GET)."""
    headers = [("content-type", content_type)] if method not in ("GET", "HEAD") else []
    ctx = RequestContext(method=method, raw_target="/graphql", path="/graphql", query=query, headers=headers,
                         client_ip="127.0.0.1", request_id="r1", start=0.0)
    ctx.body = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
    if scopes is not None:
        ctx.identity = Identity(method="jwt", subject="alice", scopes=frozenset(scopes))
    return ctx


Check = Callable[..., Awaitable[Decision]]


@pytest.fixture
def check() -> Check:
    """`await check(ctx, **policy)`: build the stage for /graphql with that policy and run it."""

    async def run(ctx: RequestContext, **policy: Any) -> Decision:
        stage = build(GraphqlPolicy(**policy), ROUTE)
        assert stage is not None
        return await stage.check(ctx)

    return run


# (query, policy, expected reason or None, fragment of the audit detail)
LIMITS = [
    # depth: fields count, fragments and inline fragments are followed but add no level themselves
    ("{ a }", {"max_depth": 3}, None, ""),
    ("{ a { b { c } } }", {"max_depth": 3}, None, ""),
    ("{ a { b { c { d } } } }", {"max_depth": 3}, "graphql_depth_exceeded", "max_depth 3"),
    ("{ a { ... on T { b { ... on U { c } } } } }", {"max_depth": 3}, None, ""),
    ("{ a { ...F } } fragment F on T { b { c } }", {"max_depth": 3}, None, ""),
    ("{ a { ...F } } fragment F on T { b { c { d } } }", {"max_depth": 3}, "graphql_depth_exceeded", "max_depth 3"),
    ("{ a { ...F } } fragment F on T { b { ...G } } fragment G on T { c { d } }", {"max_depth": 3},
     "graphql_depth_exceeded", "max_depth 3"),
    ("query A { a } query B { a { b { c { d } } } }", {"max_depth": 3}, "graphql_depth_exceeded", ""),
    # cost: a field costs m * (1 + its sub-selection), m from first/last/limit
    ("{ users(first: 10) { name } }", {"max_cost": 100}, None, ""),
    ("{ users(first: 50) { name email } }", {"max_cost": 100}, "graphql_cost_exceeded", "cost 150 > max_cost 100"),
    ("{ a(first: 5) { b(first: 5) { c } } }", {"max_cost": 100}, None, ""),  # 5 * (1 + 5 * 2) = 55
    ("{ a(first: 5) { b(last: 10) { c } } }", {"max_cost": 100}, "graphql_cost_exceeded", "cost 105"),
    ("{ users(limit: 101) }", {"max_cost": 100}, "graphql_cost_exceeded", "max_cost 100"),
    ("{ users(pageSize: 101) }", {"max_cost": 100}, None, ""),
    ("{ users(pageSize: 101) }", {"max_cost": 100, "list_arguments": ["pageSize"]}, "graphql_cost_exceeded", ""),
    ("{ a: users(first: 10) { ...F } b: users(first: 10) { ...F } } fragment F on U { x y }", {"max_cost": 60},
     None, ""),
    ("{ a: users(first: 10) { ...F } b: users(first: 10) { ...F } } fragment F on U { x y z }", {"max_cost": 60},
     "graphql_cost_exceeded", "cost 80"),
    ("{ " + "a " * 150 + "}", {"max_cost": 100}, "graphql_cost_exceeded", "max_cost 100"),  # field duplication
    ("query ($n: Int) { users(first: $n) { name } }", {"max_cost": 100}, "graphql_cost_exceeded",
     "cost 200"),  # a variable without a value counts as default_list_size (100)
    ("query ($n: Int = 60) { users(first: $n) { name } }", {"max_cost": 100}, "graphql_cost_exceeded", "cost 120"),
    ("query ($n: Int = 10) { users(first: $n) { name } }", {"max_cost": 100}, None, ""),
    # aliases and directives, counted where they are written
    ("{ a1: login(p: 1) a2: login(p: 2) }", {"max_aliases": 2}, None, ""),
    ("{ a1: login(p: 1) a2: login(p: 2) a3: login(p: 3) }", {"max_aliases": 2}, "graphql_aliases_exceeded",
     "aliases 3 > max_aliases 2"),
    ("{ a { ...F } } fragment F on T { x: b y: b z: b }", {"max_aliases": 2}, "graphql_aliases_exceeded", ""),
    ("{ a @include(if: true) b @skip(if: false) }", {"max_directives": 2}, None, ""),
    ("{ a @include(if: true) @include(if: true) b @skip(if: false) }", {"max_directives": 2},
     "graphql_directives_exceeded", "directives 3 > max_directives 2"),
    ("query Q @d1 { a { ...F @d2 } } fragment F on T @d3 { b }", {"max_directives": 2},
     "graphql_directives_exceeded", "directives 3"),
    # introspection
    ("{ __schema { types { name } } }", {}, "graphql_introspection_disabled", "__schema"),
    ('{ __type(name: "User") { fields { name } } }', {}, "graphql_introspection_disabled", "__type"),
    ("{ s: __schema { queryType { name } } }", {}, "graphql_introspection_disabled", "__schema"),
    ("{ a { ...F } } fragment F on T { __schema { types { name } } }", {}, "graphql_introspection_disabled", ""),
    ("{ a { __typename } }", {}, None, ""),
    ("{ __schema { types { name } } }", {"introspection": True}, None, ""),
    # length and tokens (comments count against both)
    ("{ a }" + " " * 60, {"max_query_length": 50}, "graphql_query_too_long", "query length 65 > max_query_length 50"),
    ("{ a b c d e f g h i j k }", {"max_tokens": 10}, "graphql_too_many_tokens", "more than 10 tokens"),
    ("{ a }" + "\n# padding" * 50, {"max_tokens": 10}, "graphql_too_many_tokens", "comments included"),
    ("{ a b c d e f g h }", {"max_tokens": 10}, None, ""),
    # documents no server may run
    ("fragment F on T { ...F } { a { ...F } }", {}, "graphql_fragment_cycle", "F"),
    ("fragment F on T { b { ...G } } fragment G on T { ... on T { ...F } } { a { ...F } }", {},
     "graphql_fragment_cycle", ""),
    ("fragment A on T { ...B } fragment B on T { ...C } fragment C on T { ...A } { a { ...A } }", {},
     "graphql_fragment_cycle", ""),
    ("{ a { ...Missing } }", {}, "graphql_invalid_query", "does not define"),
    ("fragment F on T { ...Missing } { a { ...F } }", {}, "graphql_invalid_query", "not defined"),
    ("fragment F on T { a } fragment F on T { b } { a { ...F } }", {}, "graphql_invalid_query", "twice"),
    ("query A { a } query A { b }", {}, "graphql_invalid_query", "twice"),
    ("{ a } query B { b }", {}, "graphql_invalid_query", "anonymous"),
    ("type Query { a: Int } { a }", {}, "graphql_invalid_query", "type system"),
    ("fragment F on T { a }", {}, "graphql_invalid_query", "no operation"),
    ("{ a ", {}, "graphql_syntax_error", "Expected Name"),
    ("{ " + "a { " * 250 + "b" + " }" * 251, {"max_depth": 200}, "graphql_syntax_error", "nested too deeply"),
]


@pytest.mark.parametrize(("query", "policy", "reason", "log"), LIMITS)
async def test_limits(check, query, policy, reason, log) -> None:
    decision = await check(gql_request({"query": query}), **policy)
    if reason is None:
        assert isinstance(decision, Continue), decision
        return
    assert isinstance(decision, Deny) and decision.status == 400, decision
    assert decision.reason == reason, decision
    assert log in (decision.log_detail or ""), decision.log_detail
    assert decision.detail and "{" not in decision.detail  # a sentence, never the query


POLICY_IDS = [
    ("{ a { b } }", {"max_depth": 1}, "graphql.max_depth"),
    ("{ a(first: 9) }", {"max_cost": 5}, "graphql.max_cost"),
    ("{ x: a }", {"max_aliases": 0}, "graphql.max_aliases"),
    ("{ a @skip(if: false) }", {"max_directives": 0}, "graphql.max_directives"),
    ("{ __schema { types { name } } }", {}, "graphql.introspection"),
    ("{ a b c }", {"max_tokens": 2}, "graphql.max_tokens"),
    ("{ a }", {"max_query_length": 2}, "graphql.max_query_length"),
    ("{ a }", {"persisted_only": True}, "graphql.persisted_only"),
]


@pytest.mark.parametrize(("query", "policy", "control"), POLICY_IDS)
async def test_policy_id_names_the_limit(check, query, policy, control) -> None:
    decision = await check(gql_request({"query": query}), **policy)
    assert isinstance(decision, Deny) and decision.policy_id == f"class:public/shop/graphql/{control}"


async def test_fragment_doubling_is_linear_and_refused(check) -> None:
    """F60 spreads F59 twice, ...: 2^60 fields once expanded; measured once per fragment, refused by cost."""
    fragments = " ".join(f"fragment F{i} on T {{ ...F{i - 1} x{i}: a ...F{i - 1} }}" for i in range(1, 61))
    query = "{ a { ...F60 } } fragment F0 on T { a } " + fragments
    started = time.process_time()  # this process's CPU: a loaded CI machine's other processes do not count
    decision = await check(gql_request({"query": query}), max_aliases=100)
    assert time.process_time() - started < 0.5
    assert isinstance(decision, Deny) and decision.reason == "graphql_cost_exceeded", decision
    assert "cost at least 1000000000000000 > max_cost 10000" in (decision.log_detail or "")


# ---------------------------------------------------------------- batches

BATCHES = [
    ([{"query": "{ a }"}, {"query": "{ b }"}], {"max_batch": 2}, None, ""),
    ([{"query": "{ a }"}] * 3, {"max_batch": 2}, "graphql_batch_exceeded", "max_batch 2"),
    ([{"query": "{ a }"}, {"query": "{ b }"}], {"max_batch": 1}, "graphql_batch_exceeded", "max_batch 1"),
    ([], {}, "graphql_invalid_request", "empty"),
    ([{"query": "{ a }"}, "{ b }"], {}, "graphql_invalid_request", "batch entry 1"),
    # budgets are per request: a batch cannot split a refused query into accepted pieces
    ([{"query": "{ u(first: 30) { n } }"}, {"query": "{ u(first: 30) { n } }"}], {"max_cost": 100},
     "graphql_cost_exceeded", "batch entry 1: cost 120 > max_cost 100"),
    ([{"query": "{ x: a y: a }"}, {"query": "{ x: a y: a }"}], {"max_aliases": 3}, "graphql_aliases_exceeded",
     "aliases 4"),
    ([{"query": "{ a }"}, {"query": "{ __schema { types { name } } }"}], {}, "graphql_introspection_disabled",
     "batch entry 1"),
    ([{"query": "{ a }"}, {"query": "{ a { b { c } } }"}], {"max_depth": 2}, "graphql_depth_exceeded",
     "batch entry 1"),
]


@pytest.mark.parametrize(("body", "policy", "reason", "log"), BATCHES)
async def test_batches(check, body, policy, reason, log) -> None:
    decision = await check(gql_request(body), **policy)
    if reason is None:
        assert isinstance(decision, Continue), decision
        return
    assert isinstance(decision, Deny) and decision.status == 400 and decision.reason == reason, decision
    assert log in (decision.log_detail or ""), decision.log_detail


# ---------------------------------------------------------------- how the request is carried

HTTP = [
    # (method, URL query, body, content type, expected status or None, reason)
    ("GET", "query=%7B%20a%20%7D", None, "", None, ""),
    ("GET", "query=query%20Q(%24n%3A%20Int)%20%7B%20u(first%3A%20%24n)%20%7B%20x%20%7D%20%7D&variables=%7B%22n%22%3A5%7D"
     "&operationName=Q", None, "", None, ""),
    ("GET", "query=mutation%20%7B%20createOrder%20%7D", None, "", 405, "graphql_mutation_over_get"),
    ("GET", "query=mutation%20M%20%7B%20a%20%7D%20query%20Q%20%7B%20b%20%7D&operationName=M", None, "", 405,
     "graphql_mutation_over_get"),
    ("GET", "query=mutation%20M%20%7B%20a%20%7D%20query%20Q%20%7B%20b%20%7D&operationName=Q", None, "", None, ""),
    ("GET", "", None, "", 400, "graphql_invalid_request"),
    ("GET", "query=%7Ba%7D&query=%7Bb%7D", None, "", 400, "graphql_invalid_request"),
    ("GET", "query=%7Ba%7D&variables=nope", None, "", 400, "graphql_invalid_request"),
    ("GET", "query=%ff", None, "", 400, "graphql_invalid_request"),
    ("GET", "query=%7Ba%7D", b'{"query": "{ b }"}', "application/json", 400, "graphql_invalid_request"),
    ("POST", "", b"{ a }", "application/graphql", None, ""),
    ("POST", "", b'{"query": "{ a }"}', "application/graphql+json", None, ""),
    ("POST", "", b'{"query": "{ a }"}', "application/json; charset=utf-8", None, ""),
    ("POST", "", b'{"query": "{ a }"}', "text/plain", 415, "graphql_unsupported_media_type"),
    ("POST", "", b"query={a}", "application/x-www-form-urlencoded", 415, "graphql_unsupported_media_type"),
    ("POST", "query=%7B%20__schema%20%7B%20types%20%7B%20name%20%7D%20%7D%20%7D", b'{"query": "{ a }"}',
     "application/json", 400, "graphql_invalid_request"),  # a server preferring the URL would run that one
    ("POST", "query=%7B%20a%20%7D", b"", "application/json", None, ""),
    ("POST", "", b"", "application/json", 400, "graphql_invalid_request"),
    ("POST", "", b'{"query": "{ a }", "query": "{ __schema { types { name } } }"}', "application/json", 400,
     "graphql_invalid_request"),  # duplicate keys: which one the upstream runs is its parser's choice
    ("POST", "", b'{"query": "{ a }", "documentId": "abc"}', "application/json", 400, "graphql_invalid_request"),
    ("POST", "", b'{"query": 1}', "application/json", 400, "graphql_invalid_request"),
    ("POST", "", b'{"query": "{ a }", "variables": [1]}', "application/json", 400, "graphql_invalid_request"),
    ("POST", "", b'{"query": "{ a }", "operationName": 5}', "application/json", 400, "graphql_invalid_request"),
    ("POST", "", b'{"query": "{ a }", "extensions": "x"}', "application/json", 400, "graphql_invalid_request"),
    ("POST", "", b'{"query": "{ a }", "operationName": "Nope"}', "application/json", 400, "graphql_invalid_query"),
    ("POST", "", b'{"query": "query A { a } query B { b }"}', "application/json", 400, "graphql_invalid_query"),
    ("POST", "", b'{"query": "query A { a } query B { b }", "operationName": "B"}', "application/json", None, ""),
    ("POST", "", b'{"query": "mutation M { a }"}', "application/json", None, ""),
    ("POST", "", b'{"operationName": "Q"}', "application/json", 400, "graphql_invalid_request"),
    ("POST", "", b'{"query": "{ a }"', "application/json", 400, "graphql_invalid_request"),
    ("POST", "", b"\xff\xfe", "application/graphql", 400, "graphql_invalid_request"),
    ("POST", "", b"[1, 2]", "application/json", 400, "graphql_invalid_request"),
]


@pytest.mark.parametrize(("method", "url", "body", "ctype", "status", "reason"), HTTP)
async def test_http_forms(check, method, url, body, ctype, status, reason) -> None:
    ctx = gql_request(method=method, query=url, raw=body, content_type=ctype)
    if method == "GET" and body is not None:
        ctx.headers.append(("content-type", ctype))
    decision = await check(ctx)
    if status is None:
        assert isinstance(decision, Continue), decision
        return
    assert isinstance(decision, Deny) and (decision.status, decision.reason) == (status, reason), decision
    if status == 405:
        assert ("allow", "POST") in decision.headers
    if status == 415:
        assert decision.headers and decision.headers[0][0] == "accept-post"


# ---------------------------------------------------------------- persisted queries

KNOWN = "query Orders { orders(first: 10) { id } }"
KNOWN_SHA = hashlib.sha256(KNOWN.encode()).hexdigest()
OTHER = "{ orders(first: 10) { id total } }"

PERSISTED = [
    ({"query": KNOWN}, {"persisted_only": True, "persisted_queries": [KNOWN_SHA]}, None),
    ({"query": OTHER}, {"persisted_only": True, "persisted_queries": [KNOWN_SHA]}, "graphql_query_not_persisted"),
    ({"query": OTHER}, {"persisted_only": True}, "graphql_query_not_persisted"),
    ({"query": KNOWN + " "}, {"persisted_only": True, "persisted_queries": [KNOWN_SHA]},
     "graphql_query_not_persisted"),  # the hash is of the exact text
    ({"query": KNOWN, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": KNOWN_SHA}}},
     {"persisted_only": True, "persisted_queries": [KNOWN_SHA]}, None),
    ({"query": KNOWN, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": KNOWN_SHA.upper()}}}, {}, None),
    ({"query": OTHER, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": KNOWN_SHA}}},
     {"persisted_queries": [KNOWN_SHA]}, "graphql_persisted_hash_mismatch"),
    ({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": KNOWN_SHA}}},
     {"persisted_only": True, "persisted_queries": [KNOWN_SHA]}, "graphql_persisted_query_unsupported"),
    ({"query": KNOWN, "extensions": {"persistedQuery": {"version": 1}}}, {}, "graphql_invalid_request"),
    # a listed query still gets every other check
    ({"query": KNOWN}, {"persisted_only": True, "persisted_queries": [KNOWN_SHA], "max_cost": 5},
     "graphql_cost_exceeded"),
]


@pytest.mark.parametrize(("body", "policy", "reason"), PERSISTED)
async def test_persisted_queries(check, body, policy, reason) -> None:
    decision = await check(gql_request(body), **policy)
    if reason is None:
        assert isinstance(decision, Continue), decision
    else:
        assert isinstance(decision, Deny) and decision.status == 400 and decision.reason == reason, decision


async def test_unlisted_query_is_recorded_when_not_persisted_only(check) -> None:
    ctx = gql_request({"query": OTHER})
    decision = await check(ctx, persisted_queries=[KNOWN_SHA])
    assert isinstance(decision, Continue)
    assert [(r.control, r.outcome, r.reason) for r in ctx.records] == [
        ("graphql.persisted_only", "detect", "graphql_query_not_persisted")]
    listed = gql_request({"query": KNOWN})
    assert isinstance(await check(listed, persisted_queries=[KNOWN_SHA]), Continue) and not listed.records


# ---------------------------------------------------------------- operation scopes

SCOPES = {"createOrder": ["orders:write"], "refund": ["orders:write", "payments:refund"]}

OPERATION_SCOPES = [
    ("mutation { createOrder(item: 1) { id } }", ("orders:write",), None),
    ("mutation { createOrder(item: 1) { id } }", ("orders:read",), 403),
    ("mutation { createOrder(item: 1) { id } }", None, 401),
    ("mutation Harmless { createOrder(item: 1) { id } }", ("orders:read",), 403),  # the client names operations
    ("mutation { ok: createOrder(item: 1) { id } }", ("orders:read",), 403),  # aliases do not hide the field
    ("mutation { ...M } fragment M on Mutation { createOrder(item: 1) { id } }", ("orders:read",), 403),
    ("mutation { ... on Mutation { createOrder(item: 1) { id } } }", ("orders:read",), 403),
    ("mutation { refund(id: 1) { id } }", ("orders:write",), 403),
    ("mutation { refund(id: 1) { id } }", ("orders:write", "payments:refund"), None),
    ("query createOrder { orders { id } }", ("orders:read",), 403),  # the operation name is a key too
    ("query Orders { orders { createOrder } }", None, None),  # only root fields are operations
    ("{ orders { id } }", None, None),
    # every operation of the document counts, whichever operationName selects
    ("query Q { orders { id } } mutation M { createOrder(item: 1) { id } }", ("orders:read",), 403),
]


@pytest.mark.parametrize(("query", "scopes", "status"), OPERATION_SCOPES)
async def test_operation_scopes(check, query, scopes, status) -> None:
    body = {"query": query, "operationName": "Q"} if query.startswith("query Q") else {"query": query}
    decision = await check(gql_request(body, scopes=scopes), operation_scopes=SCOPES)
    if status is None:
        assert isinstance(decision, Continue), decision
        return
    assert isinstance(decision, Deny) and decision.status == status, decision
    assert decision.policy_id.endswith("/graphql.operation_scopes")
    challenge = dict(decision.headers)["www-authenticate"]
    if status == 401:
        assert decision.reason == "graphql_identity_required" and "error=" not in challenge
    else:
        assert decision.reason == "graphql_insufficient_scope"
        assert 'error="insufficient_scope"' in challenge and 'scope="' in challenge
        assert "missing [" in (decision.log_detail or "")


async def test_insufficient_scope_names_every_needed_scope(check) -> None:
    ctx = gql_request({"query": "mutation { refund(id: 1) { id } }"}, scopes=("orders:write",))
    decision = await check(ctx, operation_scopes=SCOPES)
    assert isinstance(decision, Deny)
    assert dict(decision.headers)["www-authenticate"] == (
        'Bearer realm="bastion", error="insufficient_scope", scope="orders:write payments:refund"')
    assert "missing [payments:refund]" in (decision.log_detail or "")


# ---------------------------------------------------------------- which routes

def _route(path: str) -> RouteInfo:
    return RouteInfo(api="shop", route="r", klass="public", path=path, methods=frozenset({"POST"}))


@pytest.mark.parametrize(("path", "enabled", "built"), [
    ("/graphql", "auto", True),
    ("/api/v1/graphql", "auto", True),
    ("/graphql/", "auto", True),
    ("/orders", "auto", False),
    ("/graphql-docs", "auto", False),
    ("/orders", True, True),
    ("/graphql", False, False),
])
def test_which_routes_are_graphql(path, enabled, built) -> None:
    assert (build(GraphqlPolicy(enabled=enabled), _route(path)) is not None) is built


def test_stage_contract() -> None:
    stage = build(GraphqlPolicy(), _route("/graphql"))
    assert stage is not None and stage.control == "graphql" and stage.needs_body is True


# ---------------------------------------------------------------- the shared document cache

async def test_cached_document_still_meets_each_routes_token_limit() -> None:
    cache = prepare(None, None)  # type: ignore[arg-type]
    query = "{ a b c d e f }  # eight tokens and a comment"
    loose = build(GraphqlPolicy(max_tokens=100), _route("/a/graphql"), cache)
    tight = build(GraphqlPolicy(max_tokens=8), _route("/b/graphql"), cache)
    assert loose is not None and tight is not None
    assert isinstance(await loose.check(gql_request({"query": query})), Continue)
    assert cache.get(query) is not None
    decision = await tight.check(gql_request({"query": query}))
    assert isinstance(decision, Deny) and decision.reason == "graphql_too_many_tokens", decision
    assert "9 tokens > max_tokens 8" in (decision.log_detail or "")


def test_cache_is_bounded() -> None:
    cache = DocumentCache(entries=2, max_chars=10)
    doc = parse("{ a }")
    cache.put("{ a }", doc, 3)
    cache.put("{ b }", doc, 3)
    cache.get("{ a }")  # most recently used
    cache.put("{ c }", doc, 3)
    assert cache.get("{ b }") is None and cache.get("{ a }") is not None and cache.get("{ c }") is not None
    cache.put("{ long_field }", doc, 3)
    assert cache.get("{ long_field }") is None
