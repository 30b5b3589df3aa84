"""OCSF 1.3.0 events, built as plain dicts from the gateway's decisions (pure functions, no I/O).

- every request: API Activity (6003), or Authentication (3002) when the identity control refused it;
- administrative actions and protocol errors: API Activity (6003);
- detections: Detection Finding (2004).

Bastion's own fields go under `unmapped.bastion`. Secrets never enter an event: no header values other than the
User-Agent, no query string, no body; a credential appears only as its id (`jti`, key id, certificate hash).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from bastion import __version__
from bastion import policy_ids as ids
from bastion.context import Deny, RequestContext
from bastion.tracing import current_trace_id

OCSF_VERSION = "1.3.0"
PRODUCT = {"name": "Bastion", "vendor_name": "Bastion", "version": __version__}

# Denials that are authentication failures: their event is an Authentication (3002), and they feed the
# credential-stuffing detector. Matched on the reason code's prefix, or on the identity control having denied.
AUTH_REASON_PREFIXES = ("jwt_", "api_key_", "apikey_", "mtls_", "introspection_", "credential_", "token_",
                        "client_certificate_", "consumer_unknown", "query_token", "query_api_key")

_SECRETISH = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"  # a JWS/JWE compact serialisation
    r"|(?i:bearer|basic|apikey|splunk)\s+[A-Za-z0-9._~+/=-]{8,}"  # an Authorization value
)
_MAX_DETAIL = 1024


def scrub(text: str | None) -> str | None:
    """An operator detail with anything token-shaped replaced: belt and braces behind the stages' own care."""
    if not text:
        return text or None
    if len(text) > _MAX_DETAIL:
        text = text[:_MAX_DETAIL] + "..."
    return _SECRETISH.sub("[redacted]", text)


def is_auth_failure(ctx: RequestContext, deny: Deny | None) -> bool:
    if deny is None:
        return False
    if deny.reason.startswith(AUTH_REASON_PREFIXES):
        return True
    records = ctx.records
    return bool(records) and records[-1].control == "identity" and records[-1].outcome == "deny"


class Ids:
    """Unique event ids, cheaply: a random per-process prefix and a counter, in UUID text form."""

    __slots__ = ("_n", "_prefix")

    def __init__(self) -> None:
        raw = os.urandom(10).hex()
        self._prefix = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-"
        self._n = 0

    def new(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n:012x}"


def _metadata(uid: str, correlation: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"version": OCSF_VERSION, "product": PRODUCT, "uid": uid, "log_name": "audit",
                            "profiles": ["security_control"]}
    if correlation:
        meta["correlation_uid"] = correlation
    return meta


_ACTIVITIES = {"POST": (1, "Create"), "GET": (2, "Read"), "HEAD": (2, "Read"), "OPTIONS": (2, "Read"),
               "PUT": (3, "Update"), "PATCH": (3, "Update"), "DELETE": (4, "Delete")}


def _http_request(ctx: RequestContext) -> dict[str, Any]:
    request: dict[str, Any] = {"http_method": ctx.method, "url": {"path": ctx.path}, "uid": ctx.request_id}
    agent = ctx.header("user-agent")
    if agent:
        request["user_agent"] = agent[:256]
    return request


def _bastion(ctx: RequestContext, status: int, deny: Deny | None, exceptions: tuple[str, ...],
             upstream_status: int | None) -> dict[str, Any]:
    identity = ctx.identity
    out: dict[str, Any] = {
        "request_id": ctx.request_id, "api": ctx.api, "route": ctx.route, "client_ip": ctx.client_ip,
        "decision": "deny" if deny is not None else "allow",
        "reason": deny.reason if deny is not None else None,
        "detail": scrub(deny.log_detail) if deny is not None else None,
        "decisions": [{"control": r.control, "outcome": r.outcome, "policy": r.policy_id,
                       "reason": r.reason or None, "exception_id": r.exception_id} for r in ctx.records],
        "exceptions": list(exceptions),
        "auth_method": identity.method if identity else None,
        "subject": identity.subject if identity else None,
        "consumer": identity.consumer if identity else None,
        "credential_id": identity.credential_id if identity else None,
        "status": status, "upstream_status": upstream_status, "tls": ctx.tls,
    }
    trace_id = current_trace_id()  # with `gateway.tracing` on: the request's OpenTelemetry trace
    if trace_id is not None:
        out["trace_id"] = trace_id
    return out


def request_event(uid: str, ctx: RequestContext, status: int, deny: Deny | None, duration: float,
                  exceptions: tuple[str, ...] = (), upstream_status: int | None = None) -> dict[str, Any]:
    """The event of one request: Authentication (3002) for an identity failure, else API Activity (6003)."""
    if deny is not None and is_auth_failure(ctx, deny):
        return auth_failure_event(uid, ctx, status, deny, duration, exceptions, upstream_status)
    denied = deny is not None
    activity, activity_name = _ACTIVITIES.get(ctx.method, (99, "Other"))
    identity = ctx.identity
    actor: dict[str, Any]
    if identity is not None and identity.subject:
        actor = {"user": {"uid": identity.subject, "name": identity.subject}}
        if identity.consumer:
            actor["app_name"] = identity.consumer
    elif identity is not None and identity.consumer:
        actor = {"app_name": identity.consumer}
    else:
        actor = {"user": {"name": "anonymous", "type_id": 0}}
    return {
        "class_uid": 6003, "class_name": "API Activity", "category_uid": 6, "activity_id": activity,
        "activity_name": activity_name, "type_uid": 600300 + activity, "time": int(ctx.start * 1000),
        "severity_id": 3 if denied else 1, "status_id": 2 if denied else 1,
        "status": "Failure" if denied else "Success", "status_code": str(status),
        "action_id": 2 if denied else 1, "disposition_id": 2 if denied else 1,
        "metadata": _metadata(uid, ctx.request_id),
        "actor": actor,
        "src_endpoint": {"ip": ctx.client_ip},
        "api": {"operation": f"{ctx.method} {ctx.route}" if ctx.route else ctx.method,
                "service": {"name": ctx.api or "bastion"}},
        "http_request": _http_request(ctx),
        "http_response": {"code": status},
        "duration": round(duration * 1000, 3),
        "policy": {"uid": deny.policy_id, "name": deny.reason} if deny is not None else
                  {"uid": ids.plan(ctx.api, ctx.route), "name": "allow", "data": {"exceptions": list(exceptions)}},
        "unmapped": {"bastion": _bastion(ctx, status, deny, exceptions, upstream_status)},
    }


def _auth_protocol(reason: str) -> tuple[int, str]:
    if reason.startswith(("jwt_", "token_", "introspection_", "query_token")):
        return 6, "OAUTH 2.0"
    if reason.startswith(("api_key_", "apikey_", "query_api_key")):
        return 99, "API key"
    if reason.startswith(("mtls_", "client_certificate_")):
        return 99, "TLS client certificate"
    return 0, "Unknown"


def auth_failure_event(uid: str, ctx: RequestContext, status: int, deny: Deny, duration: float,
                       exceptions: tuple[str, ...] = (), upstream_status: int | None = None) -> dict[str, Any]:
    """Authentication (3002), activity Logon, status Failure."""
    protocol_id, protocol = _auth_protocol(deny.reason)
    identity = ctx.identity
    user: dict[str, Any] = ({"uid": identity.subject, "name": identity.subject}
                            if identity is not None and identity.subject else {"name": "unknown", "type_id": 0})
    return {
        "class_uid": 3002, "class_name": "Authentication", "category_uid": 3, "activity_id": 1,
        "activity_name": "Logon", "type_uid": 300201, "time": int(ctx.start * 1000),
        "severity_id": 3, "status_id": 2, "status": "Failure", "status_code": str(status),
        "status_detail": deny.reason, "action_id": 2, "disposition_id": 2,
        "metadata": _metadata(uid, ctx.request_id),
        "user": user,
        "auth_protocol_id": protocol_id, "auth_protocol": protocol, "is_remote": True,
        "service": {"name": ctx.api or "bastion"},
        "src_endpoint": {"ip": ctx.client_ip},
        "http_request": _http_request(ctx),
        "duration": round(duration * 1000, 3),
        "policy": {"uid": deny.policy_id, "name": deny.reason},
        "unmapped": {"bastion": _bastion(ctx, status, deny, exceptions, upstream_status)},
    }


def protocol_error_event(uid: str, peer: str, reason: str, detail: str, request_id: str,
                         status: int) -> dict[str, Any]:
    """A request refused while parsing (smuggling attempts, oversized heads): API Activity, activity Other."""
    return {
        "class_uid": 6003, "class_name": "API Activity", "category_uid": 6, "activity_id": 99,
        "activity_name": "Other", "type_uid": 600399, "time": int(time.time() * 1000),
        "severity_id": 3, "status_id": 2, "status": "Failure", "status_code": str(status),
        "action_id": 2, "disposition_id": 2,
        "metadata": _metadata(uid, request_id),
        "actor": {"user": {"name": "anonymous", "type_id": 0}},
        "src_endpoint": {"ip": peer},
        "api": {"operation": "http.parse", "service": {"name": "bastion"}},
        "http_response": {"code": status},
        "policy": {"uid": ids.gateway("framing"), "name": reason},
        "unmapped": {"bastion": {"request_id": request_id, "decision": "deny", "reason": reason,
                                 "detail": scrub(detail), "status": status, "client_ip": peer}},
    }


def admin_event(uid: str, action: str, outcome: str, detail: dict[str, Any]) -> dict[str, Any]:
    """An administrative action (config load/reload, block/unblock, key generation ...): API Activity."""
    ok = outcome == "success"
    peer = detail.pop("peer", None)
    src: dict[str, Any] = {"ip": peer} if peer and _looks_like_ip(peer) else {"name": peer or "local"}
    return {
        "class_uid": 6003, "class_name": "API Activity", "category_uid": 6, "activity_id": 3,
        "activity_name": "Update", "type_uid": 600303, "time": int(time.time() * 1000),
        "severity_id": 2 if ok else 4, "status_id": 1 if ok else 2, "status": "Success" if ok else "Failure",
        "metadata": _metadata(uid),
        "actor": {"process": {"pid": os.getpid(), "name": "bastion"}},
        "api": {"operation": action, "service": {"name": "bastion-admin"}},
        "src_endpoint": src,
        "unmapped": {"bastion": {"admin_action": action, "outcome": outcome, **detail}},
    }


def _looks_like_ip(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or ":" in text) and " " not in text


def finding_event(uid: str, *, detection: str, title: str, description: str, severity_id: int,
                  key_kind: str, key: str, count: int, window: float, threshold: int, first_seen: float,
                  last_seen: float, ip: str | None, subject: str | None, consumer: str | None, api: str | None,
                  attacks: tuple[tuple[str, str, str, str], ...] = (),
                  responses: list[dict[str, Any]] | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Detection Finding (2004), activity Create, status New."""
    evidence: dict[str, Any] = {}
    if ip:
        evidence["src_endpoint"] = {"ip": ip}
    if subject or consumer:
        evidence["actor"] = ({"user": {"uid": subject, "name": subject}} if subject else {})
        if consumer:
            evidence["actor"]["app_name"] = consumer
    info: dict[str, Any] = {
        "uid": uid, "title": title, "desc": description, "types": [detection],
        "analytic": {"name": detection, "uid": f"bastion.{detection}", "type_id": 1, "type": "Rule"},
        "created_time": int(last_seen * 1000), "first_seen_time": int(first_seen * 1000),
        "last_seen_time": int(last_seen * 1000),
    }
    if attacks:
        info["attacks"] = [{"tactic": {"uid": tactic, "name": tactic_name},
                            "technique": {"uid": technique, "name": technique_name}}
                           for tactic, tactic_name, technique, technique_name in attacks]
    event: dict[str, Any] = {
        "class_uid": 2004, "class_name": "Detection Finding", "category_uid": 2, "activity_id": 1,
        "activity_name": "Create", "type_uid": 200401, "time": int(last_seen * 1000),
        "severity_id": severity_id, "status_id": 1, "status": "New", "is_alert": True,
        "confidence_id": 2,
        "metadata": _metadata(uid),
        "finding_info": info,
        "message": title,
        "unmapped": {"bastion": {
            "detection": detection, "key_kind": key_kind, "key": key, "count": count, "window": window,
            "threshold": threshold, "ip": ip, "subject": subject, "consumer": consumer, "api": api,
            "responses": responses or [], **(extra or {}),
        }},
    }
    if evidence:
        event["evidences"] = [evidence]
    if api:
        event["resources"] = [{"type": "api", "name": api}]
    return event
