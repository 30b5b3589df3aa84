"""Every decision kind becomes an event that conforms to the pinned OCSF version (and maps to ECS)."""

from __future__ import annotations

import orjson
import pytest

from bastion.audit.ecs import to_ecs
from bastion.audit.events import (
    Ids,
    admin_event,
    finding_event,
    protocol_error_event,
    request_event,
    scrub,
)
from bastion.audit.ocsf import validate
from bastion.context import ControlRecord, Identity
from tests.audit.helpers import ALICE, auth_deny, context, deny

IDENTITY_OK = ControlRecord("identity", "allow", "class:partner/orders/get-order/identity.methods")
WAIVED = ControlRecord("transport", "waived", "exception:EXC-1", "", "EXC-1")


def _cases():
    """(name, ctx, status, deny, expected class_uid, expected reason)."""
    yield "allow", context(identity=ALICE, records=(IDENTITY_OK,)), 200, None, 6003, None
    yield "allow_anonymous", context(records=()), 200, None, 6003, None
    yield "allow_waived", context(identity=ALICE, records=(WAIVED, IDENTITY_OK)), 200, None, 6003, None
    yield "allow_consumer_only", context(identity=Identity(method="api_key", consumer="billing")), 200, None, \
        6003, None
    for reason in ("jwt_expired", "jwt_bad_signature", "jwt_alg_not_allowed", "api_key_invalid",
                   "credential_missing", "introspection_inactive", "token_binding_mismatch", "credential_revoked"):
        record, d = auth_deny(reason)
        yield f"auth_{reason}", context(method="POST", records=(record,)), 401, d, 3002, reason
    record, d = auth_deny("consumer_disabled", 403)
    yield "auth_consumer_disabled", context(records=(record,)), 403, d, 3002, "consumer_disabled"
    for control, reason, status in (("transport", "tls_required", 403), ("authz", "scope_missing", 403),
                                    ("traffic", "rate_limited", 429), ("input", "input_invalid_body", 400)):
        record, d = deny(control, reason, status)
        yield f"deny_{reason}", context(method="PUT", identity=ALICE, records=(IDENTITY_OK, record)), status, d, \
            6003, reason
    _, d = deny("gateway", "unknown_route", 404)
    yield "unknown_route", context(route="", api="", params={}), 404, d, 6003, "unknown_route"
    _, d = deny("gateway", "gateway_error", 500)
    yield "gateway_error", context(method="DELETE", identity=ALICE), 500, d, 6003, "gateway_error"
    _, d = deny("upstream", "upstream_timeout", 504)
    yield "upstream_timeout", context(method="PATCH", identity=ALICE, records=(IDENTITY_OK,)), 504, d, 6003, \
        "upstream_timeout"


CASES = list(_cases())


@pytest.mark.parametrize(("name", "ctx", "status", "deny_", "class_uid", "reason"), CASES,
                         ids=[c[0] for c in CASES])
def test_request_events_conform(name, ctx, status, deny_, class_uid, reason):
    event = request_event(Ids().new(), ctx, status, deny_, 0.0123, ("EXC-1",) if "waived" in name else (), 200)
    assert validate(event) == []
    assert event["class_uid"] == class_uid
    bastion = event["unmapped"]["bastion"]
    assert bastion["reason"] == reason
    assert bastion["decision"] == ("deny" if deny_ else "allow")
    assert bastion["request_id"] == "req-1" == event["metadata"]["correlation_uid"]
    if deny_ is not None:
        assert event["status_id"] == 2 and event["action_id"] == 2 and event["disposition_id"] == 2
        assert event["policy"]["uid"] == deny_.policy_id
    else:
        assert event["status_id"] == 1 and event["policy"]["uid"] == f"plan/{ctx.api}/{ctx.route}/allow"
    assert [d["control"] for d in bastion["decisions"]] == [r.control for r in ctx.records]
    ecs = to_ecs(event)
    assert ecs["event"]["id"] == event["metadata"]["uid"]
    assert ecs["event"]["outcome"] == ("failure" if deny_ else "success")
    assert ecs["source"]["ip"] == "203.0.113.9"
    orjson.dumps(event)
    orjson.dumps(ecs)


def test_waiver_is_recorded_with_its_exception():
    ctx = context(identity=ALICE, records=(WAIVED, IDENTITY_OK))
    event = request_event("u", ctx, 200, None, 0.001, ("EXC-1",))
    assert event["unmapped"]["bastion"]["exceptions"] == ["EXC-1"]
    assert event["unmapped"]["bastion"]["decisions"][0] == {
        "control": "transport", "outcome": "waived", "policy": "exception:EXC-1", "reason": None,
        "exception_id": "EXC-1"}


def test_authentication_failure_event_shape():
    record, d = auth_deny("api_key_invalid")
    event = request_event("u", context(records=(record,)), 401, d, 0.001)
    assert (event["class_uid"], event["activity_id"], event["type_uid"]) == (3002, 1, 300201)
    assert event["user"] == {"name": "unknown", "type_id": 0}
    assert event["auth_protocol"] == "API key" and event["status_detail"] == "api_key_invalid"
    assert event["service"] == {"name": "orders"}


def test_protocol_admin_and_finding_events_conform():
    events = [
        protocol_error_event("p", "198.51.100.1", "cl_and_te", "Content-Length with Transfer-Encoding", "r", 400),
        admin_event("a", "config.reload", "failure", {"peer": "127.0.0.1", "errors": ["bad"]}),
        admin_event("b", "gateway.start", "success", {"config_hash": "abc"}),
        admin_event("c", "config.reload", "success", {"peer": "SIGHUP"}),
        finding_event("f", detection="credential_stuffing", title="t", description="d", severity_id=4,
                      key_kind="ip", key="203.0.113.9", count=20, window=60.0, threshold=20, first_seen=1.0,
                      last_seen=2.0, ip="203.0.113.9", subject=None, consumer=None, api="orders",
                      attacks=(("TA0006", "Credential Access", "T1110.004", "Credential Stuffing"),),
                      responses=[{"action": "block", "kind": "ip", "key": "203.0.113.9", "until": 3.0}]),
    ]
    for event in events:
        assert validate(event) == [], event
        to_ecs(event)
    assert events[4]["finding_info"]["attacks"][0]["technique"]["uid"] == "T1110.004"
    assert to_ecs(events[4])["threat"]["technique"]["id"] == ["T1110.004"]
    assert to_ecs(events[4])["event"]["kind"] == "alert"


def test_event_ids_are_unique_across_instances():
    first, second = Ids(), Ids()
    ids = {first.new() for _ in range(10_000)} | {second.new() for _ in range(10_000)}
    assert len(ids) == 20_000
    assert all(len(i) == 36 and i.count("-") == 4 for i in list(ids)[:10])


@pytest.mark.parametrize(("text", "leaked"), [
    ("bad signature on eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl", "eyJzdWIiOiJhIn0"),
    ("header was Bearer abcdefghijklmnop1234", "abcdefghijklmnop1234"),
    ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
])
def test_scrub_removes_token_shaped_strings(text, leaked):
    assert leaked not in (scrub(text) or "")
    assert "[redacted]" in (scrub(text) or "")


def test_query_string_and_headers_never_enter_the_event():
    ctx = context(query="access_token=s3cr3t-token&page=2",
                  headers=[("authorization", "Bearer s3cr3t-token"), ("cookie", "session=c00kie"),
                           ("x-api-key", "bsk_abcd_secretsecretsecret"), ("user-agent", "curl/8")])
    text = orjson.dumps(request_event("u", ctx, 200, None, 0.001)).decode()
    for secret in ("s3cr3t-token", "c00kie", "secretsecretsecret", "access_token"):
        assert secret not in text
    assert "curl/8" in text
