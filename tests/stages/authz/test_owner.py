"""Object-level authorisation (BOLA): ids from path, query, header and body, bound to the caller or looked up."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from bastion.context import Continue, Deny
from bastion.stages.authz import AuthzPolicy, build, missing_owner, prepare
from bastion.stages.authz.owner import pointer
from bastion.stages.base import Services

from .conftest import Clock, body_stage, caller, request, route, stage

ALICE = caller("alice", accounts=["a-1", "a-2"], uid=42, admin=True, ext={"accounts": ["x-9"]},
               consumer="web")

HEAD = [
    # (rule, request keyword arguments, expected reason or None)
    ({"from": "path.account_id", "equals": "claim:sub"}, {"params": {"account_id": "alice"}}, None),
    ({"from": "path.account_id", "equals": "claim:sub"}, {"params": {"account_id": "bob"}}, "owner_mismatch"),
    ({"from": "path.account_id", "equals": "claim:sub"}, {"params": {"account_id": "Alice"}}, "owner_mismatch"),
    ({"from": "path.account_id", "equals": "subject"}, {"params": {"account_id": "alice"}}, None),
    ({"from": "path.account_id", "equals": "consumer"}, {"params": {"account_id": "web"}}, None),
    ({"from": "path.account_id", "in": "claim:accounts"}, {"params": {"account_id": "a-2"}}, None),
    ({"from": "path.account_id", "in": "claim:accounts"}, {"params": {"account_id": "a-3"}}, "owner_mismatch"),
    ({"from": "path.account_id", "in": "claim:ext.accounts"}, {"params": {"account_id": "x-9"}}, None),
    ({"from": "path.account_id", "in": "claim:missing"}, {"params": {"account_id": "a-1"}}, "owner_mismatch"),
    ({"from": "path.account_id", "in": "claim:sub"}, {"params": {"account_id": "alice"}}, "owner_mismatch"),
    ({"from": "path.account_id", "equals": "claim:uid"}, {"params": {"account_id": "42"}}, None),  # number claim
    ({"from": "path.account_id", "equals": "claim:admin"}, {"params": {"account_id": "True"}}, "owner_mismatch"),
    ({"from": "path.account_id", "equals": "claim:accounts"}, {"params": {"account_id": "a-1"}}, "owner_mismatch"),
    ({"from": "query.account", "in": "claim:accounts"}, {"query": "account=a-1"}, None),
    ({"from": "query.account", "in": "claim:accounts"}, {"query": "account=a-1&account=a-2"}, None),
    # parameter pollution: every value is checked, not only the first or the last
    ({"from": "query.account", "in": "claim:accounts"}, {"query": "account=a-1&account=b-7"}, "owner_mismatch"),
    ({"from": "query.account", "in": "claim:accounts"}, {"query": "account=b-7&account=a-1"}, "owner_mismatch"),
    ({"from": "query.account", "in": "claim:accounts"}, {"query": "account=a%2D1"}, None),  # decoded
    ({"from": "query.account", "in": "claim:accounts"}, {"query": "other=1"}, "object_id_missing"),
    ({"from": "query.account", "in": "claim:accounts", "optional": True}, {"query": "other=1"}, None),
    ({"from": "header.X-Account", "in": "claim:accounts"}, {"headers": [("x-account", "a-1")]}, None),
    ({"from": "header.x-account", "in": "claim:accounts"},
     {"headers": [("x-account", "a-1"), ("x-account", "b-1")]}, "owner_mismatch"),
]


@pytest.mark.parametrize(("rule", "req", "reason"), HEAD)
async def test_owner_rules_on_the_request_head(shared: Any, rule: dict[str, Any], req: dict[str, Any],
                                                reason: str | None) -> None:
    decision = await stage(shared, owner=rule).check(request(ALICE, **req))
    if reason is None:
        assert decision == Continue("class:partner/bank/get-account/authz.owner")
        return
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (403, reason)
    assert decision.detail is not None and "alice" not in decision.detail


BODY = [
    # (rule, body, expected reason or None)
    ({"from": "body./account/id", "in": "claim:accounts"}, {"account": {"id": "a-1"}, "amount": 5}, None),
    ({"from": "body./account/id", "in": "claim:accounts"}, {"account": {"id": "b-1"}}, "owner_mismatch"),
    ({"from": "body./account/id", "in": "claim:accounts"}, {"account": {"id": ["a-1"]}}, "owner_mismatch"),
    ({"from": "body./account/id", "in": "claim:accounts"}, {"account": {}}, "object_id_missing"),
    ({"from": "body./account/id", "in": "claim:accounts", "optional": True}, {"account": {}}, None),
    ({"from": "body./items/1/owner", "equals": "subject"}, {"items": [{"owner": "bob"}, {"owner": "alice"}]}, None),
    ({"from": "body./items/0/owner", "equals": "subject"}, {"items": [{"owner": "bob"}, {"owner": "alice"}]},
     "owner_mismatch"),
    ({"from": "body./a~1b", "equals": "claim:uid"}, {"a/b": 42}, None),
    # the upstream's JSON parser may keep the first copy while ours keeps the last: refuse duplicates
    ({"from": "body./account/id", "in": "claim:accounts"}, b'{"account": {"id": "b-1", "id": "a-1"}}',
     "object_id_missing"),
    ({"from": "body./account/id", "in": "claim:accounts"}, b"account=a-1", "object_id_missing"),
    ({"from": "body./account/id", "in": "claim:accounts"}, b"", "object_id_missing"),
]


@pytest.mark.parametrize(("rule", "body", "reason"), BODY)
async def test_owner_rules_on_the_json_body(shared: Any, rule: dict[str, Any], body: Any, reason: str | None) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    assert build(AuthzPolicy.model_validate({"owner": rule}), route(), shared) is None  # nothing on the head
    decision = await body_stage(shared, owner=rule).check(request(ALICE, method="POST", body=raw))
    if reason is None:
        assert decision == Continue("class:partner/bank/get-account/authz.owner")
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (403, reason)


async def test_body_rules_need_an_identity(shared: Any) -> None:
    decision = await body_stage(shared, owner={"from": "body./id", "equals": "subject"}).check(
        request(None, body=b'{"id": "alice"}'))
    assert isinstance(decision, Deny) and (decision.status, decision.reason) == (401, "identity_required")


async def test_consumer_tenant() -> None:
    config = SimpleNamespace(consumers=[SimpleNamespace(name="globex-app", tenant="globex"),
                                        SimpleNamespace(name="loner")])
    shared = prepare(config, Services())
    try:
        built = stage(shared, route("/tenants/{tenant}/orders"), owner={"from": "path.tenant",
                                                                        "equals": "consumer_tenant"})
        for consumer, tenant, allowed in (("globex-app", "globex", True), ("globex-app", "acme", False),
                                          ("loner", "loner", False), (None, "globex", False)):
            decision = await built.check(request(caller("svc", consumer=consumer), params={"tenant": tenant}))
            assert isinstance(decision, Continue) is allowed, (consumer, tenant)
    finally:
        await shared.close()


async def test_a_caller_iterating_other_users_ids_is_denied_every_time(shared: Any) -> None:
    built = stage(shared, route("/users/{user_id}/statements"), owner={"from": "path.user_id", "equals": "claim:sub"})
    me = caller("user-1000")
    outcomes = [await built.check(request(me, params={"user_id": f"user-{n}"})) for n in range(1, 2001)]
    allowed = [n for n, d in enumerate(outcomes, start=1) if isinstance(d, Continue)]
    assert allowed == [1000]
    denied = [d for d in outcomes if isinstance(d, Deny)]
    assert len(denied) == 1999 and {(d.status, d.reason) for d in denied} == {(403, "owner_mismatch")}
    assert "path.user_id = 'user-7' is not the caller's (claim:sub of subject 'user-1000'" in (
        denied[6].log_detail or "")


def test_rule_on_a_path_parameter_the_route_lacks_is_a_config_error(shared: Any) -> None:
    with pytest.raises(ValueError, match="has no parameter"):
        build(AuthzPolicy.model_validate({"owner": {"from": "path.id", "equals": "subject"}}), route(), shared)


@pytest.mark.parametrize("rule", [
    {"from": "path.id"},
    {"from": "path.id", "equals": "subject", "in": "claim:accounts"},
    {"from": "cookie.id", "equals": "subject"},
    {"from": "path.id", "equals": "tenant"},
    {"from": "path.id", "in": "subject"},
])
def test_malformed_rules_are_refused(rule: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AuthzPolicy.model_validate({"owner": rule})


def test_require_owner(shared: Any) -> None:
    policy = AuthzPolicy(require_owner=True)
    assert missing_owner(route("/accounts/{account_id}"), policy)
    assert not missing_owner(route("/accounts"), policy)
    with pytest.raises(ValueError, match="takes an object id in its path"):
        build(policy, route(), shared)
    assert build(policy, route("/accounts"), shared) is None


def test_json_pointer() -> None:
    doc = {"a": [{"b": 1}], "": {"x": 2}, "m~n": 3}
    assert pointer(doc, "/a/0/b") == 1 and pointer(doc, "//x") == 2 and pointer(doc, "/m~0n") == 3
    for bad in ("/a/01", "/a/-", "/a/5", "/nope"):
        with pytest.raises((KeyError, IndexError)):
            pointer(doc, bad)


# ---------------------------------------------------------------- ownership lookup against a real server

def owners_service(owned: dict[str, set[str]], delay: float = 0.0, status: int = 200) -> Any:
    def handle(method: str, target: str, body: bytes) -> tuple[int, bytes, float]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        allowed = query.get("object", "") in owned.get(query.get("subject", ""), set())
        return status, orjson.dumps({"allowed": allowed}), delay
    return handle


def lookup_stage(shared: Any, url: str, **lookup: Any) -> Any:
    return stage(shared, route("/documents/{doc}"), owner={"from": "path.doc", "lookup": {"url": url, **lookup}})


async def test_lookup_allows_denies_and_caches(shared: Any, peer: Any, clock: Clock) -> None:
    server = await peer(owners_service({"alice": {"d-1"}}))
    built = lookup_stage(shared, f"{server.url}/owner", cache_ttl="30s")
    assert isinstance(await built.check(request(ALICE, params={"doc": "d-1"})), Continue)
    denied = await built.check(request(ALICE, params={"doc": "d-2"}))
    assert isinstance(denied, Deny) and (denied.status, denied.reason) == (403, "owner_mismatch")
    method, target, _ = server.requests[0]
    assert method == "GET" and parse_qs(urlsplit(target).query) == {
        "object": ["d-1"], "subject": ["alice"], "consumer": ["web"]}
    assert urlsplit(target).path == "/owner"
    for _ in range(5):  # yes and no are both cached
        await built.check(request(ALICE, params={"doc": "d-1"}))
        await built.check(request(ALICE, params={"doc": "d-2"}))
    assert len(server.requests) == 2 and server.connections == 1  # one kept-alive connection
    clock.now += 31
    await built.check(request(ALICE, params={"doc": "d-1"}))
    assert len(server.requests) == 3


async def test_lookup_iteration_is_denied_every_time(shared: Any, peer: Any) -> None:
    server = await peer(owners_service({"alice": {"d-500"}}))
    built = lookup_stage(shared, f"{server.url}/owner")
    outcomes = [await built.check(request(ALICE, params={"doc": f"d-{n}"})) for n in range(1, 601)]
    assert [n for n, d in enumerate(outcomes, start=1) if isinstance(d, Continue)] == [500]
    assert len(server.requests) == 600


async def test_concurrent_identical_lookups_share_one_call(shared: Any, peer: Any) -> None:
    server = await peer(owners_service({"alice": {"d-1"}}, delay=0.05))
    built = lookup_stage(shared, f"{server.url}/owner")
    outcomes = await asyncio.gather(*(built.check(request(ALICE, params={"doc": "d-1"})) for _ in range(20)))
    assert all(isinstance(d, Continue) for d in outcomes) and len(server.requests) == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_lookup_failures_fail_closed(shared: Any, peer: Any) -> None:
    slow = await peer(owners_service({"alice": {"d-1"}}, delay=0.5))
    broken = await peer(owners_service({"alice": {"d-1"}}, status=500))
    for url in (f"{slow.url}/owner", f"{broken.url}/owner", f"http://127.0.0.1:{closed_port()}/owner"):
        built = lookup_stage(shared, url, timeout="100ms")
        ctx = request(ALICE, params={"doc": "d-1"})
        decision = await built.check(ctx)
        assert isinstance(decision, Deny), url
        assert (decision.status, decision.reason) == (503, "ownership_unavailable")
        assert "ownership lookup for path.doc = 'd-1' failed" in (decision.log_detail or "")
        assert decision.detail == "Access to the object could not be verified; try again later."


async def test_lookup_fail_open_is_allowed_and_recorded(shared: Any, peer: Any) -> None:
    slow = await peer(owners_service({}, delay=0.5))
    built = lookup_stage(shared, f"{slow.url}/owner", timeout="50ms", on_error="open")
    ctx = request(ALICE, params={"doc": "d-1"})
    assert isinstance(await built.check(ctx), Continue)
    assert [(r.outcome, r.reason) for r in ctx.records] == [("allow", "ownership_unavailable_open")]
    # an explicit "no" is still a no
    fast = await peer(owners_service({}))
    built = lookup_stage(shared, f"{fast.url}/owner", on_error="open")
    assert isinstance(await built.check(request(ALICE, params={"doc": "d-1"})), Deny)
