"""The audit log: one event per request and per administrative action, never blocking the request path.

Events are built as dicts and put on a bounded in-memory queue; a background task writes them to the sinks.
A full queue drops the event and counts it (the request never waits on audit).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import orjson

from bastion import __version__
from bastion.audit.config import AuditConfig
from bastion.context import Deny, RequestContext

OCSF_VERSION = "1.3.0"
_PRODUCT = {"name": "Bastion", "vendor_name": "Bastion", "version": __version__}


class AuditLog:
    """Builds events and hands them to the writer; `enabled` is False when no sink is configured."""

    @classmethod
    def from_config(cls, config: AuditConfig, base_dir: Path) -> AuditLog:
        sinks: list[TextIO | Path] = []
        for sink in config.sinks:
            if sink.type == "stdout":
                sinks.append(sys.stdout)
            elif sink.path is not None:
                sinks.append(sink.path if sink.path.is_absolute() else base_dir / sink.path)
        return cls(sinks, config.queue_size)

    def __init__(self, sinks: list[TextIO | Path] | None = None, queue_size: int = 65536) -> None:
        self._targets = sinks or []
        self.enabled = bool(self._targets)
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._queue_size = queue_size
        self._task: asyncio.Task[None] | None = None
        self._files: list[TextIO] = []
        self.dropped = 0
        self.written = 0

    async def start(self) -> None:
        if not self.enabled:
            return
        self._queue = asyncio.Queue(self._queue_size)
        for target in self._targets:
            if isinstance(target, Path):
                target.parent.mkdir(parents=True, exist_ok=True)
                self._files.append(open(target, "a", encoding="utf-8"))  # noqa: SIM115 - closed in close()
            else:
                self._files.append(target)
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def close(self) -> None:
        if self._queue is not None and self._task is not None:
            await self._queue.join()
            self._task.cancel()
        for f in self._files:
            if f not in (sys.stdout, sys.stderr):
                f.close()

    def emit(self, event: dict[str, Any]) -> None:
        if self._queue is None:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            event = await self._queue.get()
            lines = [orjson.dumps(event)]
            count = 1
            while not self._queue.empty() and count < 512:  # write in batches
                lines.append(orjson.dumps(self._queue.get_nowait()))
                count += 1
            data = (b"\n".join(lines) + b"\n").decode()
            for f in self._files:
                f.write(data)
                f.flush()
            self.written += count
            for _ in range(count):
                self._queue.task_done()

    # ---- event builders -----------------------------------------------------------------------------------

    def request(self, ctx: RequestContext, status: int, deny: Deny | None, duration: float,
                exceptions: tuple[str, ...] = (), upstream_status: int | None = None) -> None:
        if self._queue is None:
            return
        denied = deny is not None
        identity = ctx.identity
        event: dict[str, Any] = {
            "class_uid": 6003, "category_uid": 6, "activity_id": _activity(ctx.method),
            "type_uid": 600300 + _activity(ctx.method), "time": int(ctx.start * 1000),
            "severity_id": 3 if denied else 1, "status_id": 2 if denied else 1,
            "action_id": 2 if denied else 1, "disposition_id": 2 if denied else 1,
            "metadata": {"version": OCSF_VERSION, "product": _PRODUCT, "uid": str(uuid.uuid4()),
                         "correlation_uid": ctx.request_id, "profiles": ["security_control"]},
            "actor": {"user": {"uid": identity.subject if identity else None,
                               "name": identity.consumer if identity else None}},
            "src_endpoint": {"ip": ctx.client_ip},
            "api": {"operation": f"{ctx.method} {ctx.route}" if ctx.route else ctx.method,
                    "service": {"name": ctx.api or None}},
            "http_request": {"http_method": ctx.method, "url": {"path": ctx.path}},
            "http_response": {"code": status},
            "duration": round(duration * 1000, 3),
            "policy": {"uid": deny.policy_id if deny else "allow"},
            "unmapped": {"bastion": {
                "request_id": ctx.request_id, "route": ctx.route, "api": ctx.api,
                "decision": "deny" if denied else "allow",
                "reason": deny.reason if deny else None,
                "detail": deny.log_detail if deny else None,
                "decisions": [{"control": r.control, "outcome": r.outcome, "policy": r.policy_id,
                               "reason": r.reason or None, "exception_id": r.exception_id}
                              for r in ctx.records],
                "exceptions": list(exceptions),
                "auth_method": identity.method if identity else None,
                "credential_id": identity.credential_id if identity else None,
                "upstream_status": upstream_status,
            }},
        }
        self.emit(event)

    def protocol_error(self, peer: str, reason: str, detail: str, request_id: str, status: int) -> None:
        if self._queue is None:
            return
        self.emit({
            "class_uid": 4002, "category_uid": 4, "activity_id": 99, "type_uid": 400299,
            "time": int(time.time() * 1000), "severity_id": 3, "status_id": 2, "action_id": 2,
            "disposition_id": 2, "metadata": {"version": OCSF_VERSION, "product": _PRODUCT,
                                              "uid": str(uuid.uuid4()), "correlation_uid": request_id},
            "src_endpoint": {"ip": peer}, "http_response": {"code": status},
            "unmapped": {"bastion": {"request_id": request_id, "decision": "deny", "reason": reason,
                                     "detail": detail}},
        })

    def admin(self, action: str, outcome: str, **detail: Any) -> None:
        if self._queue is None:
            return
        self.emit({
            "class_uid": 6003, "category_uid": 6, "activity_id": 3, "type_uid": 600303,
            "time": int(time.time() * 1000), "severity_id": 2 if outcome == "success" else 4,
            "status_id": 1 if outcome == "success" else 2,
            "metadata": {"version": OCSF_VERSION, "product": _PRODUCT, "uid": str(uuid.uuid4())},
            "actor": {"process": {"pid": os.getpid()}},
            "api": {"operation": action, "service": {"name": "bastion-admin"}},
            "src_endpoint": {"ip": detail.pop("peer", None)},
            "unmapped": {"bastion": {"admin_action": action, "outcome": outcome, **detail}},
        })


def _activity(method: str) -> int:
    # OCSF API Activity: 1 Create, 2 Read, 3 Update, 4 Delete
    return {"POST": 1, "GET": 2, "HEAD": 2, "OPTIONS": 2, "PUT": 3, "PATCH": 3, "DELETE": 4}.get(method, 99)
