"""The authz stage: roles, administrative routes, identity, policy ids, explain lines, baseline comparisons."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.config.models import Baseline
from bastion.context import Continue, Deny
from bastion.governance.baseline import weakenings
from bastion.stages.authz import AuthzPolicy, build, explain

from .conftest import caller, request, route, stage

ROLES = [
    # (roles policy, caller roles, expected reason or None, fragment of log_detail)
    ({"any_of": ["clerk", "manager"]}, "clerk", None, ""),
    ({"any_of": ["clerk", "manager"]}, "manager other", None, ""),
    ({"any_of": ["clerk", "manager"]}, "viewer", "role_missing", "needs any of [clerk manager]; roles: viewer"),
    ({"any_of": ["clerk", "manager"]}, "", "role_missing", "roles: none"),
    ({"all_of": ["auditor", "eu"]}, "auditor eu", None, ""),
    ({"all_of": ["auditor", "eu"]}, "auditor", "role_missing", "all of [auditor eu] (lacks eu)"),
    ([{"any_of": ["clerk", "manager"]}, {"all_of": ["eu"]}], "clerk eu", None, ""),
    ([{"any_of": ["clerk", "manager"]}, {"all_of": ["eu"]}], "clerk us", "role_missing", "lacks eu"),
    ({"any_of": ["clerk"], "all_of": ["eu"]}, "eu", "role_missing", "any of [clerk]"),
    ({"any_of": ["Clerk"]}, "clerk", "role_missing", ""),  # roles are case-sensitive
]


@pytest.mark.parametrize(("roles", "has", "reason", "log"), ROLES)
async def test_roles(shared: Any, roles: Any, has: str, reason: str | None, log: str) -> None:
    decision = await stage(shared, roles=roles).check(request(caller(roles=has)))
    if reason is None:
        assert decision == Continue("class:partner/bank/get-account/authz.roles")
        return
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason, decision.headers) == (403, reason, ())
    assert log in (decision.log_detail or "")
    assert decision.detail == "The caller does not have a role this operation requires."


ADMIN = [
    # (policy, operation, caller roles, expected reason or None)
    ({"administrative": True, "admin_roles": ["platform-admin"]}, None, "platform-admin", None),
    ({"administrative": True, "admin_roles": ["platform-admin"]}, None, "manager", "admin_role_missing"),
    ({"admin_roles": ["platform-admin", "sre"]}, {"x-bastion-admin": True}, "sre", None),
    ({"admin_roles": ["platform-admin"]}, {"x-bastion-admin": True}, "", "admin_role_missing"),
    ({"admin_roles": ["platform-admin"]}, {"x-bastion-admin": False}, "", None),  # not administrative
    ({"admin_roles": ["platform-admin"], "roles": {"any_of": ["clerk"]}}, {"x-bastion-admin": True},
     "platform-admin", "role_missing"),  # the admin role does not replace the route's own roles
]


@pytest.mark.parametrize(("policy", "operation", "has", "reason"), ADMIN)
async def test_administrative_routes(shared: Any, policy: dict[str, Any], operation: dict[str, Any] | None,
                                     has: str, reason: str | None) -> None:
    built = build(AuthzPolicy.model_validate(policy), route(operation=operation), shared)
    if built is None:
        assert reason is None
        return
    decision = await built.check(request(caller(roles=has)))
    if reason is None:
        assert isinstance(decision, Continue)
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (403, reason)


def test_administrative_route_without_admin_roles_is_a_config_error(shared: Any) -> None:
    with pytest.raises(ValueError, match=r"administrative but no authz\.admin_roles"):
        build(AuthzPolicy(), route(operation={"x-bastion-admin": True}), shared)


async def test_admin_policy_id_names_openapi_when_the_document_marks_it(shared: Any) -> None:
    built = stage(shared, route(operation={"x-bastion-admin": True}), admin_roles=["ops"])
    assert built.requirements() == [
        "administrative: needs any of [ops]  [openapi/bank/get-account/authz.administrative]"]
    decision = await built.check(request(caller(roles="")))
    assert isinstance(decision, Deny) and decision.policy_id == "class:partner/bank/get-account/authz.admin_roles"


async def test_identity_required_by_roles_and_owner_rules(shared: Any) -> None:
    for policy in ({"roles": {"any_of": ["a"]}}, {"owner": {"from": "path.account_id", "equals": "subject"}}):
        decision = await stage(shared, **policy).check(request(None, params={"account_id": "1"}))
        assert isinstance(decision, Deny)
        assert (decision.status, decision.reason) == (401, "identity_required")
        assert decision.headers == (("www-authenticate", 'Bearer realm="bastion"'),)


def test_nothing_configured_builds_no_stage(shared: Any) -> None:
    assert build(AuthzPolicy(), route(), shared) is None


async def test_allow_records_the_most_specific_origin_and_the_exception(shared: Any) -> None:
    info = route(sources={"authz.roles": "route:bank/get-account", "authz.scopes": "exception:EXC-7"})
    built = stage(shared, info, scopes=["a"], roles={"any_of": ["r"]})
    assert await built.check(request(caller(scopes="a", roles="r"))) == Continue(
        "route/bank/get-account/authz.roles", "EXC-7")


def test_explain_lists_each_requirement_with_its_policy_id(shared: Any) -> None:
    policy = AuthzPolicy.model_validate({
        "scopes": ["accounts:read"], "roles": {"any_of": ["clerk"]},
        "conditions": {"tenant": "claims.tenant == path.account_id"},
        "owner": [{"from": "path.account_id", "in": "claim:accounts"}, {"from": "body./to", "equals": "subject"}],
        "opa": {"url": "http://127.0.0.1:8181"}})
    lines = explain(policy, route(sources={"authz.owner": "route:bank/get-account"}), shared)
    assert lines == [
        "scopes: config: accounts:read  [class:partner/bank/get-account/authz.scopes]",
        "roles: any of [clerk]  [class:partner/bank/get-account/authz.roles]",
        "condition tenant: claims.tenant == path.account_id  [class:partner/bank/get-account/authz.conditions]",
        "owner: path.account_id in claim:accounts  [route/bank/get-account/authz.owner]",
        "owner: body./to equals subject  [route/bank/get-account/authz.owner]",
        "opa: POST http://127.0.0.1:8181/v1/data/bastion/allow (on_error closed)  "
        "[class:partner/bank/get-account/authz.opa]",
    ]
    assert explain(AuthzPolicy(administrative=True), route(), shared)[0].startswith("invalid: route bank/")


WEAKER = [
    # (class authz, route authz, weakened control ids)
    ({}, {"roles": {"any_of": ["clerk"]}}, []),  # adding a requirement is tightening
    ({"roles": {"any_of": ["clerk"]}}, {"roles": [{"any_of": ["clerk"]}, {"all_of": ["eu"]}]}, []),
    ({"roles": {"any_of": ["clerk"]}}, {"roles": {"any_of": ["clerk", "guest"]}}, ["authz.roles"]),
    ({"scopes": ["a"]}, {"scopes": ["a", "b"]}, []),
    ({"scopes": ["a", "b"]}, {"scopes": ["a"]}, ["authz.scopes"]),
    ({"conditions": {"t": "method == 'GET'"}}, {"conditions": {"t": "true"}}, ["authz.conditions"]),
    ({"conditions": {"t": "method == 'GET'"}}, {"conditions": {"t": "method == 'GET'", "u": "true"}}, []),
    ({}, {"owner": {"from": "path.id", "equals": "subject"}}, []),
    ({"admin_roles": ["root"]}, {"admin_roles": ["root", "ops"]}, ["authz.admin_roles"]),
    ({"require_scopes": True}, {"require_scopes": False}, ["authz.require_scopes"]),
    ({"opa": {"url": "http://127.0.0.1:8181"}}, {"opa": {"on_error": "open"}}, ["authz.opa.on_error"]),
    ({"opa": {"url": "http://127.0.0.1:8181"}}, {"opa": {"url": None}}, ["authz.opa.url"]),
]


@pytest.mark.parametrize(("klass", "mine", "weak"), WEAKER)
def test_baseline_comparison(klass: dict[str, Any], mine: dict[str, Any], weak: list[str]) -> None:
    from bastion.governance.baseline import merge

    base = Baseline.model_validate({"authz": klass})
    data, sources = merge(base.model_dump(mode="python"), ("route:x/y", {"authz": mine}))
    declared = Baseline.model_validate(data)
    assert [w.control for w in weakenings(base, declared, sources)] == weak
