"""An Elastic Common Schema (ECS 8.x) view of an OCSF event, for sinks with `format: ecs`.

The mapping is lossless for Bastion's own fields (kept under `bastion`) and maps the common ones to their ECS
homes: `event.*`, `source.ip`, `user.*`, `http.*`, `url.path`, `rule.*`, `threat.*`, `observer.*`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

ECS_VERSION = "8.11.0"

_CATEGORY = {6003: ["web"], 3002: ["authentication"], 2004: ["intrusion_detection"]}


def to_ecs(event: dict[str, Any]) -> dict[str, Any]:
    klass = event.get("class_uid", 0)
    bastion = dict(event.get("unmapped", {}).get("bastion", {}))
    failed = event.get("status_id") == 2
    finding = klass == 2004
    ecs_event: dict[str, Any] = {
        "id": event["metadata"]["uid"],
        "kind": "alert" if finding else "event",
        "category": _CATEGORY.get(klass, ["web"]),
        "type": ["info"] if finding else (["start"] if klass == 3002 else ["access"]),
        "outcome": "unknown" if finding else ("failure" if failed else "success"),
        "action": bastion.get("detection") or bastion.get("admin_action") or bastion.get("reason")
        or event.get("api", {}).get("operation"),
        "severity": event.get("severity_id", 0),
        "dataset": "bastion.audit",
        "module": "bastion",
    }
    if "duration" in event:
        ecs_event["duration"] = int(event["duration"] * 1_000_000)  # ms -> ns
    if klass != 2004 and failed:
        ecs_event["type"] = [*ecs_event["type"], "denied"]
    out: dict[str, Any] = {
        "@timestamp": datetime.fromtimestamp(event["time"] / 1000, UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "ecs": {"version": ECS_VERSION},
        "event": ecs_event,
        "observer": {"vendor": "Bastion", "product": "Bastion", "type": "api-gateway",
                     "version": event["metadata"]["product"].get("version")},
        "bastion": bastion,
    }
    correlation = event["metadata"].get("correlation_uid")
    if correlation:
        out["http"] = {"request": {"id": correlation}}
    src = event.get("src_endpoint") or {}
    ip = src.get("ip") or bastion.get("client_ip") or bastion.get("ip")
    if ip:
        out["source"] = {"ip": ip}
    subject = bastion.get("subject")
    if subject:
        out["user"] = {"id": subject, "name": subject}
    request = event.get("http_request")
    if request:
        http = out.setdefault("http", {})
        http.setdefault("request", {})["method"] = request["http_method"]
        out["url"] = {"path": request["url"]["path"]}
        if "user_agent" in request:
            out["user_agent"] = {"original": request["user_agent"]}
    response = event.get("http_response")
    if response:
        out.setdefault("http", {})["response"] = {"status_code": response["code"]}
    api = bastion.get("api")
    if api:
        out["service"] = {"name": api}
    policy = event.get("policy")
    if policy:
        out["rule"] = {"id": policy["uid"], "name": policy.get("name")}
    if finding:
        info = event["finding_info"]
        out["rule"] = {"id": info["analytic"]["uid"], "name": info["title"], "description": info.get("desc")}
        attacks = info.get("attacks")
        if attacks:
            out["threat"] = {"framework": "MITRE ATT&CK",
                             "tactic": {"id": [a["tactic"]["uid"] for a in attacks],
                                        "name": [a["tactic"]["name"] for a in attacks]},
                             "technique": {"id": [a["technique"]["uid"] for a in attacks],
                                           "name": [a["technique"]["name"] for a in attacks]}}
    if event.get("message"):
        out["message"] = event["message"]
    return out
