"""The audit event of a target's state change (ejection, breaker trip, health flip): OCSF API Activity."""

from __future__ import annotations

import time
from typing import Any

from bastion.audit.events import OCSF_VERSION, PRODUCT
from bastion.upstreams.health import TargetEvent

_SEVERITY = {"ejected": 3, "unhealthy": 3, "breaker_open": 3, "retry_after": 2, "healthy": 1}


def target_event(uid: str, api: str, event: TargetEvent, wall: float | None = None) -> dict[str, Any]:
    """`upstream.ejected`, `upstream.breaker_open`, ... for one target of `api`'s pool."""
    return {
        "class_uid": 6003, "class_name": "API Activity", "category_uid": 6, "activity_id": 99,
        "activity_name": "Other", "type_uid": 600399, "time": int((wall or time.time()) * 1000),
        "severity_id": _SEVERITY.get(event.action, 2), "status_id": 1 if event.action == "healthy" else 2,
        "status": "Success" if event.action == "healthy" else "Failure",
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "uid": uid, "log_name": "audit",
                     "profiles": ["security_control"]},
        "actor": {"process": {"name": "bastion"}},
        "api": {"operation": f"upstream.{event.action}", "service": {"name": api}},
        "dst_endpoint": _endpoint(event.target),
        "unmapped": {"bastion": {"upstream_event": event.action, "reason": event.reason, "api": api,
                                 "target": event.target, "seconds": round(event.seconds, 3)}},
    }


def _endpoint(name: str) -> dict[str, Any]:
    host, _, port = name.rpartition(":")
    return {"hostname": host, "port": int(port)} if port.isdigit() else {"hostname": name}
