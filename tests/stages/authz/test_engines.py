"""OPA over its data API (a real HTTP server implementing it) and Cedar in-process: allow, deny, errors, cache."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bastion.context import Continue, Deny
from bastion.stages.authz import AuthzPolicy, build

from .conftest import Clock, caller, request, route, stage

ALICE = caller("alice", roles="clerk", scopes="accounts:read", tenant="acme")


def opa_data_api(decide: Any, delay: float = 0.0) -> Any:
    """OPA's `POST /v1/data/<path>`: `decide(path, input)` returns the `result` (or `...` for undefined)."""
    def handle(method: str, target: str, body: bytes) -> tuple[int, bytes, float]:
        if method != "POST" or not target.startswith("/v1/data/"):
            return 404, b'{"code": "not_found"}', 0.0
        result = decide(target[len("/v1/data/"):], orjson.loads(body)["input"])
        if result is ...:
            return 200, b"{}", delay  # OPA answers `{}` when the rule is undefined
        return 200, orjson.dumps({"result": result}), delay
    return handle


def tenant_policy(path: str, data: dict[str, Any]) -> Any:
    """package bastion; allow if the caller's tenant claim equals the path's tenant."""
    identity = data["identity"]
    if path == "bastion/allow":
        return bool(identity) and identity["claims"].get("tenant") == data["request"]["path_params"].get("tenant")
    if path == "bastion/decision":
        if identity and "clerk" in identity["roles"]:
            return {"allow": True}
        return {"allow": False, "reason": "clerks only"}
    return ...


OPA = [
    # (opa config, request keyword arguments, expected reason or None, fragment of log_detail)
    ({}, {"params": {"tenant": "acme"}}, None, ""),
    ({}, {"params": {"tenant": "globex"}}, "opa_denied", "bastion/allow = false"),
    ({}, {"identity": None, "params": {"tenant": "acme"}}, "opa_denied", "bastion/allow = false"),
    ({"path": "bastion/decision"}, {}, None, ""),
    ({"path": "bastion/decision"}, {"identity": caller("bob", roles="viewer")}, "opa_denied",
     "bastion/decision: clerks only"),
    ({"path": "bastion/undefined"}, {}, "opa_denied", "bastion/undefined is undefined for this input"),
]


@pytest.mark.parametrize(("opa", "req", "reason", "log"), OPA)
async def test_opa_decisions(shared: Any, peer: Any, opa: dict[str, Any], req: dict[str, Any],
                             reason: str | None, log: str) -> None:
    server = await peer(opa_data_api(tenant_policy))
    built = stage(shared, route("/tenants/{tenant}"), opa={"url": server.url, **opa})
    identity = req.pop("identity", ALICE)
    decision = await built.check(request(identity, **req))
    if reason is None:
        assert decision == Continue("class:partner/bank/get-account/authz.opa")
        return
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (403, reason)
    assert log in (decision.log_detail or "") and "clerks" not in (decision.detail or "")


async def test_opa_input_describes_request_and_identity_without_credentials(shared: Any, peer: Any) -> None:
    server = await peer(opa_data_api(lambda path, data: True))
    built = stage(shared, route("/tenants/{tenant}", operation={"x-bastion-admin": True}), admin_roles=["clerk"],
                  opa={"url": server.url, "headers": ["X-Tenant", "authorization"]})
    ctx = request(ALICE, method="DELETE", path="/tenants/acme", query="force=1&force=2", params={"tenant": "acme"},
                  headers=[("authorization", "Bearer secret"), ("x-tenant", "acme"), ("cookie", "s=1")])
    assert isinstance(await built.check(ctx), Continue)
    method, target, body = server.requests[0]
    assert (method, target) == ("POST", "/v1/data/bastion/allow")
    sent = orjson.loads(body)["input"]
    assert sent["request"] == {"method": "DELETE", "path": "/tenants/acme", "path_params": {"tenant": "acme"},
                               "query": {"force": ["1", "2"]}, "headers": {"x-tenant": "acme"},
                               "client_ip": "192.0.2.10"}
    assert sent["route"] == {"api": "bank", "route": "get-account", "class": "partner",
                             "template": "/tenants/{tenant}", "administrative": True}
    assert sent["identity"]["subject"] == "alice" and sent["identity"]["roles"] == ["clerk"]
    assert sent["identity"]["claims"]["tenant"] == "acme"
    assert b"secret" not in body and b"s=1" not in body


async def test_opa_decisions_are_cached_per_input(shared: Any, peer: Any, clock: Clock) -> None:
    server = await peer(opa_data_api(tenant_policy))
    built = stage(shared, route("/tenants/{tenant}"), opa={"url": server.url, "cache_ttl": "5s"})
    for _ in range(10):
        await built.check(request(ALICE, params={"tenant": "acme"}))
        await built.check(request(ALICE, params={"tenant": "globex"}))
    assert len(server.requests) == 2
    clock.now += 6
    await built.check(request(ALICE, params={"tenant": "acme"}))
    assert len(server.requests) == 3


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_opa_timeout_unreachable_and_errors_fail_closed(shared: Any, peer: Any) -> None:
    # The slow peer would allow, after 30 s: a deny proves the deadline fired, and its log names the configured
    # 50 ms. The wall clock only bounds a hang: on a loaded CI machine a cold first call alone can take 100 ms+.
    slow = await peer(opa_data_api(lambda path, data: True, delay=30.0))
    broken = await peer(lambda method, target, body: (500, b'{"code": "internal_error"}', 0.0))
    garbage = await peer(lambda method, target, body: (200, b"<html>", 0.0))
    for url in (slow.url, broken.url, garbage.url, f"http://127.0.0.1:{closed_port()}"):
        built = stage(shared, opa={"url": url, "timeout": "50ms"})
        start = time.perf_counter()
        decision = await built.check(request(ALICE))
        elapsed = time.perf_counter() - start
        assert isinstance(decision, Deny), url
        assert (decision.status, decision.reason) == (503, "opa_unavailable")
        assert decision.detail == "The access policy could not be evaluated; try again later."
        if url == slow.url:
            assert "within 50ms" in (decision.log_detail or ""), decision.log_detail
            assert 0.05 <= elapsed < 5.0, elapsed  # waited for the deadline, and not for the answer
        else:
            assert elapsed < 5.0, elapsed  # failed at once: no retry loop, no wait for a deadline elsewhere


async def test_opa_fail_open_lets_through_and_records_it(shared: Any) -> None:
    built = stage(shared, opa={"url": f"http://127.0.0.1:{closed_port()}", "on_error": "open"})
    ctx = request(ALICE)
    assert isinstance(await built.check(ctx), Continue)
    assert [(r.control, r.outcome, r.reason) for r in ctx.records] == [("authz", "allow", "opa_unavailable_open")]


async def test_concurrent_identical_opa_queries_share_one_call(shared: Any, peer: Any) -> None:
    server = await peer(opa_data_api(lambda path, data: True, delay=0.05))
    built = stage(shared, opa={"url": server.url})
    outcomes = await asyncio.gather(*(built.check(request(ALICE)) for _ in range(20)))
    assert all(isinstance(d, Continue) for d in outcomes) and len(server.requests) == 1


# ---------------------------------------------------------------- Cedar

CEDAR = """
@id("clerks-read")
permit(principal in Role::"clerk", action == Action::"GET", resource);

@id("admins")
permit(principal in Role::"admin", action, resource);

@id("own-tenant")
permit(principal, action == Action::"PUT", resource)
  when { principal.claims has tenant && context.path has tenant && principal.claims.tenant == context.path.tenant };

@id("no-blocked-network")
forbid(principal, action, resource) when { context.client_ip == "203.0.113.9" };

@id("admin-routes")
forbid(principal, action, resource) when { resource.administrative } unless { principal in Role::"admin" };
"""

CEDAR_CASES = [
    # (caller, request keyword arguments, administrative route, expected allow, fragment of log_detail)
    (ALICE, {}, False, True, ""),
    (ALICE, {"method": "DELETE"}, False, False, "no Cedar policy permits it"),
    (caller("root", roles="admin"), {"method": "DELETE"}, False, True, ""),
    (ALICE, {"client_ip": "203.0.113.9"}, False, False, "forbidden by no-blocked-network"),
    (ALICE, {"method": "PUT", "params": {"tenant": "acme"}}, False, True, ""),
    (ALICE, {"method": "PUT", "params": {"tenant": "globex"}}, False, False, "no Cedar policy permits it"),
    (ALICE, {}, True, False, "forbidden by admin-routes"),
    (None, {}, False, False, "no Cedar policy permits it"),
]


@pytest.mark.parametrize(("identity", "req", "admin", "allowed", "log"), CEDAR_CASES)
async def test_cedar(shared: Any, tmp_path: Path, identity: Any, req: dict[str, Any], admin: bool,
                     allowed: bool, log: str) -> None:
    policies = tmp_path / "bank.cedar"
    policies.write_text(CEDAR)
    info = route("/tenants/{tenant}", operation={"x-bastion-admin": True} if admin else None)
    built = stage(shared, info, cedar={"policies": str(policies)}, admin_roles=["clerk"] if admin else [])
    decision = await built.check(request(identity, **req))
    if allowed:
        assert decision == Continue("class:partner/bank/get-account/authz.cedar")
        return
    assert isinstance(decision, Deny) and (decision.status, decision.reason) == (403, "cedar_denied")
    assert log in (decision.log_detail or "")


def test_cedar_policy_errors_are_config_errors(shared: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.cedar"
    bad.write_text("permit(principal, action resource);")
    with pytest.raises(ValueError, match="does not parse"):
        build(AuthzPolicy.model_validate({"cedar": {"policies": str(bad)}}), route(), shared)
    with pytest.raises(ValueError, match="cannot read"):
        build(AuthzPolicy.model_validate({"cedar": {"policies": str(tmp_path / "none.cedar")}}), route(), shared)


async def test_cedar_drops_claims_it_cannot_represent(shared: Any, tmp_path: Path) -> None:
    policies = tmp_path / "p.cedar"
    policies.write_text('permit(principal, action, resource) when { principal.claims.level == 3 };')
    built = stage(shared, cedar={"policies": str(policies)})
    identity = caller("alice", level=3, ratio=0.5, nothing=None, huge=2**70, nested={"f": 1.5, "ok": "y"})
    assert isinstance(await built.check(request(identity)), Continue)
