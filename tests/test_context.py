"""The values a request carries: the context's header lookups and the decisions' own rules."""

from __future__ import annotations

import pytest

from bastion.context import CONTINUE, Continue, ControlRecord, Deny, Identity, NotResponsible, RequestContext


def context(headers: list[tuple[str, str]]) -> RequestContext:
    return RequestContext(method="GET", raw_target="/a?b=1", path="/a", query="b=1", headers=headers,
                          client_ip="192.0.2.1", request_id="r1", start=1.0, host="api.example")


HEADERS = [("accept", "a/b"), ("x-many", "1"), ("x-many", "2")]
LOOKUPS = [
    ("first_of_one", "accept", "a/b", ["a/b"]),
    ("first_of_many", "x-many", "1", ["1", "2"]),
    ("absent", "x-none", None, []),
    ("names_are_lower_case_already", "Accept", None, []),
]


@pytest.mark.parametrize(("name", "header", "first", "values"), LOOKUPS, ids=[c[0] for c in LOOKUPS])
def test_header_lookups(name, header, first, values):
    ctx = context(HEADERS)
    assert ctx.header(header) == first
    assert ctx.header_values(header) == values


def test_a_new_context_has_decided_nothing_and_holds_no_body():
    ctx = context([])
    assert (ctx.api, ctx.route, ctx.identity, ctx.body, ctx.host) == ("", "", None, None, "api.example")
    assert ctx.records == [] and ctx.finalizers == [] and ctx.path_params == {}
    assert ctx.upstream_headers == [] and ctx.response_headers == [] and not ctx.drop_upstream_headers
    with pytest.raises(AttributeError):  # slots: a typo is an error, never a new attribute
        ctx.idenity = None  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [100, 200, 204, 302, 399, 600])
def test_a_deny_never_has_a_success_status(status):
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Deny(status, "anything", "gateway/test")


@pytest.mark.parametrize("status", [400, 403, 429, 500, 599])
def test_a_deny_has_a_client_or_server_error_status(status):
    assert Deny(status, "r", "p").status == status


def test_decisions_are_frozen_values():
    deny = Deny(403, "scope_missing", "class:c/a/r/authz", detail="Forbidden.")
    values = [(deny, "status"), (CONTINUE, "policy_id"), (Identity("jwt", subject="alice"), "subject"),
              (ControlRecord("authz", "deny", "p"), "outcome")]
    for value, field in values:  # FrozenInstanceError, or the compiled ControlRecord's AttributeError
        with pytest.raises(AttributeError):
            setattr(value, field, "changed")
        assert getattr(value, field) != "changed"
    assert Continue() == CONTINUE and NotResponsible() == NotResponsible()
    assert (deny.log_detail, deny.headers, deny.close) == (None, (), False)


def test_a_control_record_is_a_value() -> None:
    record = ControlRecord("transport", "waived", "exception:EXC-1", "", "EXC-1")
    assert record == ControlRecord("transport", "waived", "exception:EXC-1", "", "EXC-1")
    assert hash(record) == hash(ControlRecord("transport", "waived", "exception:EXC-1", "", "EXC-1"))
    assert record != ControlRecord("transport", "waived", "exception:EXC-2", "", "EXC-2")
    assert ControlRecord("authz", "deny", "p") != ("authz", "deny", "p", "", None)  # not a tuple
    assert (record.reason, ControlRecord("authz", "deny", "p").exception_id) == ("", None)
    assert repr(ControlRecord("authz", "deny", "p", "scope_missing")) == (
        "ControlRecord(control='authz', outcome='deny', policy_id='p', reason='scope_missing', exception_id=None)")
    with pytest.raises(AttributeError):
        record.surprise = "x"  # type: ignore[attr-defined]


def test_an_identity_is_a_value() -> None:
    alice = Identity("jwt", subject="alice", issuer="https://idp.test", claims={"sub": "alice"},
                     scopes=frozenset({"read"}), credential_id="j1")
    assert alice == Identity("jwt", "alice", None, "https://idp.test", {"sub": "alice"}, frozenset({"read"}),
                             frozenset(), "j1")
    assert alice != Identity("jwt", subject="alice", issuer="https://idp.test", claims={"sub": "alice"},
                             scopes=frozenset({"read"}), credential_id="j2")
    assert alice != ("jwt", "alice")  # not a tuple
    anonymous, other = Identity("anonymous"), Identity("anonymous")
    assert anonymous.claims == {} and anonymous.claims is not other.claims  # each its own, as default_factory
    assert (anonymous.scopes, anonymous.roles, anonymous.subject) == (frozenset(), frozenset(), None)
    assert repr(Identity("mtls", subject="cn=a")) == (
        "Identity(method='mtls', subject='cn=a', consumer=None, issuer=None, claims={}, scopes=frozenset(), "
        "roles=frozenset(), credential_id=None)")
    with pytest.raises(TypeError):  # claims is a dict: unhashable, as the frozen dataclass was
        hash(alice)
    with pytest.raises(AttributeError):
        alice.surprise = "x"  # type: ignore[attr-defined]
