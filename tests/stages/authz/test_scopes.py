"""Scope requirements from OpenAPI `security` (OR of objects, AND within one) and config, and RFC 6750 answers."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.context import Continue, Deny, Identity
from bastion.stages.authz import AuthzPolicy, build, missing_scopes
from bastion.stages.authz.scopes import ScopeRequirement, requirement

from .conftest import caller, request, route, stage

READ_OR_ADMIN = {"security": [{"oauth": ["accounts:read", "accounts:list"]}, {"oauth": ["admin"]}]}
OPTIONAL = {"security": [{}, {"oauth": ["accounts:read"]}]}
AUTH_ONLY = {"security": [{"apiKey": []}]}

SCOPES = [
    # (operation, config scopes, granted scopes, expected reason or None, advertised scope attribute)
    (READ_OR_ADMIN, [], "accounts:read accounts:list", None, ""),
    (READ_OR_ADMIN, [], "admin", None, ""),
    (READ_OR_ADMIN, [], "accounts:read", "scope_missing", "accounts:list accounts:read"),  # AND within one
    (READ_OR_ADMIN, [], "", "scope_missing", "accounts:list accounts:read"),
    (READ_OR_ADMIN, [], "accounts:write admin:x", "scope_missing", "accounts:list accounts:read"),
    (READ_OR_ADMIN, ["audit"], "admin", "scope_missing", "accounts:list accounts:read audit"),  # config ANDs
    (READ_OR_ADMIN, ["audit"], "admin audit", None, ""),
    (None, ["accounts:read"], "accounts:read", None, ""),
    (None, ["accounts:read"], "accounts:write", "scope_missing", "accounts:read"),
    (OPTIONAL, [], "", None, ""),  # `{}`: anyone satisfies the OR
    (AUTH_ONLY, [], "", None, ""),  # authenticated, no scope named
    ({"security": []}, [], "", None, ""),  # operation-level `security: []` removes the requirement
]


@pytest.mark.parametrize(("operation", "config", "granted", "reason", "advertised"), SCOPES)
async def test_scopes(shared: Any, operation: dict[str, Any] | None, config: list[str], granted: str,
                      reason: str | None, advertised: str) -> None:
    # a role clause keeps the stage built even where the scopes alone would need nothing
    built = stage(shared, route(operation=operation), scopes=config, roles={"any_of": ["staff"]})
    decision = await built.check(request(caller(scopes=granted, roles="staff")))
    if reason is None:
        assert isinstance(decision, Continue)
        return
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (403, "scope_missing")
    assert decision.headers == (("www-authenticate",
                                 f'Bearer realm="bastion", error="insufficient_scope", scope="{advertised}"'),)
    assert "missing scopes:" in (decision.log_detail or "")
    assert decision.detail == "The access token does not carry a scope this operation requires."


async def test_scope_claim_formats_both_work_through_identity(shared: Any) -> None:
    """The identity layer turns `scope: "a b"` and `scp: [a, b]` into the same set; authz reads only the set."""
    from bastion.stages.identity.jwt import string_set

    built = stage(shared, scopes=["accounts:read", "accounts:list"])
    for claim in ("accounts:read accounts:list", ["accounts:read", "accounts:list"], ["accounts:read"]):
        identity = Identity(method="jwt", subject="alice", scopes=string_set(claim, split=True))
        decision = await built.check(request(identity))
        assert isinstance(decision, Continue) is (len(identity.scopes) == 2)


async def test_missing_scope_log_names_the_scopes_client_sees_only_rfc6750(shared: Any) -> None:
    built = stage(shared, scopes=["accounts:read", "payments:write"])
    decision = await built.check(request(caller(scopes="accounts:read")))
    assert isinstance(decision, Deny)
    assert "missing scopes: payments:write" in (decision.log_detail or "")
    assert "payments" not in (decision.detail or "")
    assert decision.policy_id == "class:partner/bank/get-account/authz.scopes"


@pytest.mark.parametrize("identity", [None, "anonymous"])
async def test_no_identity_is_401_without_error_attribute(shared: Any, identity: str | None) -> None:
    built = stage(shared, route(operation=READ_OR_ADMIN))
    ctx = request(caller(method="anonymous", subject=None) if identity else None)
    decision = await built.check(ctx)
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (401, "identity_required")
    assert decision.headers == (("www-authenticate", 'Bearer realm="bastion"'),)
    assert decision.policy_id == "openapi/bank/get-account/authz.scopes"


async def test_anonymous_alternative_lets_anonymous_callers_through(shared: Any) -> None:
    built = build(AuthzPolicy(), route(operation=OPTIONAL), shared)
    assert built is None  # `{}` or scopes: nothing to enforce for anyone


REQUIRE = [
    # (operation, config scopes, declared?)
    (READ_OR_ADMIN, [], True),
    (None, ["a"], True),
    (None, [], False),
    (OPTIONAL, [], False),  # anonymous callers need no scope
    (AUTH_ONLY, [], False),
    ({"security": [{"oauth": ["a"]}, {"apiKey": []}]}, [], False),  # an alternative without scopes
    (OPTIONAL, ["a"], True),
]


@pytest.mark.parametrize(("operation", "config", "declared"), REQUIRE)
async def test_require_scopes(shared: Any, operation: dict[str, Any] | None, config: list[str],
                              declared: bool) -> None:
    policy = AuthzPolicy(scopes=config, require_scopes=True)
    info = route(operation=operation)
    assert missing_scopes(info, policy) is (not declared)
    if declared:
        assert build(policy, info, shared) is not None
    else:
        with pytest.raises(ValueError, match="get-account requires no scope"):
            build(policy, info, shared)


@pytest.mark.parametrize("scope", ['a"b', "a b", "a\\b", ""])
def test_scope_tokens_are_validated(scope: str) -> None:
    with pytest.raises(ValueError):
        requirement(AuthzPolicy(), route(operation={"security": [{"oauth": [scope]}]}))
    if scope:
        with pytest.raises(ValueError):
            AuthzPolicy(scopes=[scope])


def _req(security: Any, scopes: list[str] | None = None) -> ScopeRequirement:
    return requirement(AuthzPolicy(scopes=scopes or []), route(operation={"security": security}))


@pytest.mark.parametrize(("security", "config", "always", "alternatives", "anonymous"), [
    (None, [], set(), (), False),
    ([], ["admin"], {"admin"}, (), False),
    ([{"oauth": ["a", "b"]}, {"oauth": ["c"]}], [], set(), ({"a", "b"}, {"c"}), False),
    ([{}, {"oauth": ["a"]}], [], set(), ({"a"},), True),  # `{}` anywhere: anonymous, and the rest still read
    ([{"oauth": ["a"]}, {"key": None}], [], set(), ({"a"}, set()), False),  # a scheme without scopes
    ([{"oauth": ["a"], "mtls": ["b"]}], [], set(), ({"a", "b"},), False),  # AND across schemes
])
def test_requirement_reads_openapi_security(security: Any, config: list[str], always: set[str],
                                            alternatives: tuple[set[str], ...], anonymous: bool) -> None:
    req = _req(security, config)
    assert req.always == frozenset(always) and req.alternatives == tuple(frozenset(a) for a in alternatives)
    assert req.anonymous is anonymous


@pytest.mark.parametrize(("security", "match"), [
    (["oauth"], "get-account: OpenAPI security requirement 'oauth' is not an object"),
    ([{"oauth": ["a b"]}], "get-account: scope 'a b' of security scheme 'oauth' is not a valid scope token"),
])
def test_requirement_errors_name_the_route_and_the_value(security: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _req(security)


@pytest.mark.parametrize(("always", "alternatives", "anonymous", "granted", "missing"), [
    ((), (), False, "", None),
    (("x",), (), False, "", {"x"}),
    (("x",), (), True, "x", None),
    ((), ({"a", "b"}, {"c", "d"}), False, "", {"a", "b"}),  # a tie: the first alternative is named
    ((), ({"a", "b"}, {"c"}), False, "", {"c"}),  # else the closest one
    ((), ({"a"}, {"b", "c"}), False, "", {"a"}),
    ((), ({"a", "b"}, {"c"}), False, "a", {"b"}),
    ((), ({"a", "b"}, {"c"}), False, "c", None),
    (("x",), ({"a"},), False, "a", {"x"}),
    (("x",), ({"a"},), False, "x", {"a"}),
    (("x",), ({"a"},), True, "", {"x"}),  # `{}` satisfies the alternatives, never the config scopes
    ((), ({"a"},), True, "", None),
])
def test_missing_names_the_closest_alternative(always: tuple[str, ...], alternatives: tuple[set[str], ...],
                                               anonymous: bool, granted: str, missing: set[str] | None) -> None:
    req = ScopeRequirement(frozenset(always), tuple(frozenset(a) for a in alternatives), anonymous)
    result = req.missing(frozenset(granted.split()))
    assert result == (frozenset(missing) if missing is not None else None)


@pytest.mark.parametrize(("always", "alternatives", "anonymous", "text"), [
    ((), (), False, "none"),
    (("b", "a"), (), False, "config: a b"),
    ((), ({"w", "r"}, set()), False, "openapi: [r w] | [authenticated]"),
    ((), ({"r"},), True, "openapi: [r] | anonymous"),
    (("x",), ({"r"}, {"s", "t"}), False, "openapi: [r] | [s t]; config: x"),
])
def test_describe_is_the_line_bastion_explain_prints(always: tuple[str, ...], alternatives: tuple[set[str], ...],
                                                     anonymous: bool, text: str) -> None:
    assert ScopeRequirement(frozenset(always), tuple(frozenset(a) for a in alternatives), anonymous).describe() == text
