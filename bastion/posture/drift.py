"""Drift alerting: a background check that the running config still enforces what the approved file says.

```yaml
gateway:
  drift:
    approved: /etc/bastion/approved/bastion.yaml   # e.g. the config checked out from git by CI
    interval: 5m
```

Every `interval` the watch compiles the approved file (off the event loop, without building stages) and
compares its effective policies with the running gateway's (`bastion.posture.diff.compare`, the same rules as
`bastion diff`). When they start to differ it emits one Detection Finding (OCSF 2004, detection
`config_drift`, activity Create, severity High when a change is a weakening, else Medium) listing the changes,
weakenings first; when they agree again it emits one finding closing it (activity Close, status Resolved,
same `finding_info.uid`). Nothing is emitted while the state stays the same. The gauge `bastion_config_drift`
is 1 while they differ and 0 while they agree. A check that cannot read or compile the approved file emits one
`config.drift_check` admin event (failure) and leaves the state and the gauge as they were.

Both sides are compiled for the same instant (the running config's load time), so an exception that expires
after the last reload is not mistaken for drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from bastion.audit.events import admin_event, finding_event
from bastion.compile import CompiledGateway, compile_config
from bastion.config.drift import DriftConfig
from bastion.config.loader import load_config
from bastion.posture.diff import Change, compare, effective_policies

DETECTION = "config_drift"
MAX_CHANGES_IN_EVENT = 50
_ATTACK = (("TA0005", "Defense Evasion", "T1562", "Impair Defenses"),)


class DriftWatch:
    """Compare the approved file with the running config every `interval`; alert on the edges.

    `current()` returns the running `CompiledGateway` (it changes on reload). `audit` has `emit(event)` and
    `ids.new()` (an `AuditLog`). `sleep` and `clock` are injectable for tests.
    """

    def __init__(self, approved_path: str | Path, current: Callable[[], CompiledGateway], audit: Any,
                 interval: float = 300.0, *, registry: CollectorRegistry | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.approved_path = Path(approved_path)
        self.current = current
        self.audit = audit
        self.interval = interval
        self._sleep = sleep
        self._clock = clock
        self.drifting: bool | None = None  # None until the first successful check
        self.changes: list[Change] = []
        self.failing = False
        self.checks = 0
        self._open_uid: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.gauge = Gauge("bastion_config_drift", "1 while the running config's effective policies differ "
                           "from the approved file, 0 while they agree.",
                           registry=registry if registry is not None else CollectorRegistry(),
                           multiprocess_mode="livemax")

    @classmethod
    def from_config(cls, config: DriftConfig, base_dir: Path, current: Callable[[], CompiledGateway], audit: Any,
                    registry: CollectorRegistry | None = None) -> DriftWatch:
        """The watch of `gateway.drift`; a relative `approved` path is resolved against `base_dir`."""
        approved = config.approved if config.approved.is_absolute() else base_dir / config.approved
        return cls(approved, current, audit, config.interval, registry=registry)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watch must outlive any one bad check
                print(f"bastion: config drift check failed: {exc!r}", file=sys.stderr)
            await self._sleep(self.interval)

    async def check(self) -> list[Change] | None:
        """One comparison; emits on a change of state. The changes, or None when the approved file is unusable."""
        running = self.current()
        self.checks += 1
        try:
            approved = await asyncio.to_thread(_approved_policies, self.approved_path, running.loaded_at)
        except Exception as exc:  # a missing file, invalid YAML, a ConfigError: all reported alike
            if not self.failing:
                self.failing = True
                self.audit.emit(admin_event(self.audit.ids.new(), "config.drift_check", "failure",
                                            {"approved": str(self.approved_path), "error": str(exc)[:2000]}))
            return None
        self.failing = False
        other = effective_policies(running)
        changes = compare(approved, other)
        drifting = bool(changes)
        if drifting and (self.drifting is not True or _key(changes) != _key(self.changes)):
            self._open(changes, approved, other)
        elif not drifting and self.drifting:
            self._close(approved, other)
        self.drifting = drifting
        self.changes = changes
        self.gauge.set(1 if drifting else 0)
        return changes

    def _open(self, changes: list[Change], approved: dict[str, Any], other: dict[str, Any]) -> None:

        weakenings = sum(c.kind in ("weaker", "added") for c in changes)
        uid = self.audit.ids.new()
        if self._open_uid is not None and self.drifting:  # a different drift: close the old one first
            self._close(approved, other)
        self._open_uid = uid
        now = self._clock()
        first = ", ".join(_describe(c) for c in changes[:3])
        event = finding_event(
            uid, detection=DETECTION, title="Running config differs from the approved file",
            description=f"{len(changes)} effective-policy change(s), {weakenings} weakening(s), against "
                        f"{self.approved_path}: {first}{' ...' if len(changes) > 3 else ''}",
            severity_id=4 if weakenings else 3, key_kind="config", key=str(self.approved_path),
            count=len(changes), window=self.interval, threshold=1, first_seen=now, last_seen=now, ip=None,
            subject=None, consumer=None, api=None, attacks=_ATTACK if weakenings else (),
            extra=_extra(changes, weakenings, approved, other, "drift"))
        self.audit.emit(event)

    def _close(self, approved: dict[str, Any], other: dict[str, Any]) -> None:

        opened = self._open_uid
        self._open_uid = None
        uid = self.audit.ids.new()
        now = self._clock()
        event = finding_event(
            uid, detection=DETECTION, title="Running config agrees with the approved file again",
            description=f"the effective policies match {self.approved_path} again", severity_id=1,
            key_kind="config", key=str(self.approved_path), count=0, window=self.interval, threshold=1,
            first_seen=now, last_seen=now, ip=None, subject=None, consumer=None, api=None,
            extra=_extra([], 0, approved, other, "resolved"))
        # the same finding, closed (OCSF Detection Finding: activity 3 Close, status 4 Resolved)
        event.update(activity_id=3, activity_name="Close", type_uid=200403, status_id=4, status="Resolved",
                     is_alert=False)
        if opened is not None:
            event["finding_info"]["uid"] = opened
            event["metadata"]["correlation_uid"] = opened
        self.audit.emit(event)


def _approved_policies(path: Path, at: float) -> dict[str, Any]:
    return effective_policies(compile_config(load_config(path), now=at, build_stages=False))


def _key(changes: list[Change]) -> list[tuple[Any, ...]]:
    return [(c.route, c.control, c.kind, repr(c.before), repr(c.after)) for c in changes]


def _describe(change: Change) -> str:
    if change.control == "route":
        return f"{change.route}: route {change.kind}"
    return f"{change.route} {change.control} {change.kind}"


def _extra(changes: list[Change], weakenings: int, approved: dict[str, Any], other: dict[str, Any],
           state: str) -> dict[str, Any]:
    return {"state": state, "approved_hash": approved["config_hash"], "running_hash": other["config_hash"],
            "weakenings": weakenings, "changes": [asdict(c) for c in changes[:MAX_CHANGES_IN_EVENT]],
            "changes_total": len(changes)}
