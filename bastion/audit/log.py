"""The audit log: one event per request and per administrative action, never blocking the request path.

`request()` appends a compact record (the request's context and outcome, no document) to a bounded in-memory
queue. On the next turn of the event loop the queue is rendered as OCSF events, serialised once per format and
offered to every sink's channel, which delivers from memory, or spills to its disk spool when the sink is slow or
down (`bastion.audit.delivery`). The request pays for a tuple, not for a ~2 KB document.
When the queue reaches `queue_size` it is dispatched at once instead of waiting: events are never dropped for a
full queue and the request never waits for a sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from bastion.audit.config import AuditConfig, sink_name
from bastion.audit.delivery import Channel
from bastion.audit.ecs import to_ecs
from bastion.audit.events import (
    OCSF_VERSION,
    Ids,
    admin_event,
    finding_event,
    protocol_error_event,
    request_event,
)
from bastion.audit.metrics import AuditMetrics
from bastion.audit.sinks import Sink, build_sink
from bastion.audit.spool import Spool
from bastion.context import Deny, RequestContext

__all__ = ["OCSF_VERSION", "AuditLog", "SinkSpec"]

_DUMPS_OPTIONS = orjson.OPT_APPEND_NEWLINE
# `request_event`'s arguments: (uid, ctx, status, deny, duration, exceptions, upstream_status)
_RequestRecord = tuple[str, RequestContext, int, "Deny | None", float, tuple[str, ...], "int | None"]


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """A sink with its format and delivery settings; its channel and spool are opened by `start()`."""

    sink: Sink
    format: str = "ocsf"
    memory_events: int = 10_000
    batch_events: int = 500
    batch_bytes: int = 1024 * 1024
    key: str = ""  # the sink's config, as JSON: a reload that leaves it unchanged leaves the channel alone


class AuditLog:
    """Builds events and hands them to the sinks' channels; `enabled` is False when no sink is configured."""

    @classmethod
    def from_config(cls, config: AuditConfig, base_dir: Path, registry: CollectorRegistry | None = None,
                    process: str = "") -> AuditLog:
        """The audit log of `gateway.audit`. Pass the gateway's metrics registry to export its metrics.

        `process` (e.g. `worker-1`, `supervisor`) gives each process of `serve --workers N` a spool of its own
        (`<spool_dir>/<process>/<sink>/`): two processes appending to one spool lose and repeat events. A
        restarted worker takes its index, so it replays what its predecessor left."""
        specs = []
        for index, sink_config in enumerate(config.sinks):
            name = sink_name(sink_config, index)
            specs.append(SinkSpec(build_sink(sink_config, name, base_dir), sink_config.format,
                                  sink_config.memory_events, sink_config.batch_events, sink_config.batch_bytes,
                                  sink_config.model_dump_json()))
        spool_dir = config.spool_dir or Path("audit-spool")
        if process:
            spool_dir = spool_dir / process
        log = cls(specs, queue_size=config.queue_size,
                  spool_dir=spool_dir if spool_dir.is_absolute() else base_dir / spool_dir,
                  spool_max_bytes=config.spool_max_bytes, spool_segment_bytes=config.spool_segment_bytes,
                  registry=registry)
        log.process = process
        return log

    def __init__(self, sinks: list[SinkSpec] | None = None, *, queue_size: int = 65536,
                 spool_dir: Path | None = None, spool_max_bytes: int = 1024 ** 3,
                 spool_segment_bytes: int = 16 * 1024 * 1024, registry: CollectorRegistry | None = None) -> None:
        self._specs = list(sinks or [])
        self.enabled = bool(self._specs)
        self.metrics = AuditMetrics(registry)
        self.ids = Ids()
        self.channels: list[Channel] = []
        self._queue_size = queue_size
        self._spool_dir = spool_dir or Path("audit-spool")
        self._spool_max_bytes = spool_max_bytes
        self._segment_bytes = spool_segment_bytes
        self._pending: list[dict[str, Any] | _RequestRecord] = []  # events, or request records rendered later
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._formats: list[tuple[str, list[Channel]]] = []
        self._ticker: asyncio.Task[None] | None = None
        self._losses: dict[str, tuple[int, str]] = {}
        self.process = ""  # this process's spool subdirectory (`worker-1`, `supervisor`), see from_config
        self._retiring: list[Channel] = []  # channels whose sink a reload removed, delivering their backlog

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every sink's spool (replaying what a previous run left) and start the channels."""
        if not self.enabled or self._running:
            return
        self._loop = asyncio.get_running_loop()
        by_format: dict[str, list[Channel]] = {}
        for spec in self._specs:
            spool = Spool(self._spool_dir / spec.sink.name, self._spool_max_bytes, self._segment_bytes)
            channel = Channel(spec.sink, spool, memory_events=spec.memory_events, batch_events=spec.batch_events,
                              batch_bytes=spec.batch_bytes, metrics=self.metrics, on_loss=self._on_loss)
            channel.start()
            self.channels.append(channel)
            by_format.setdefault(spec.format, []).append(channel)
        self._formats = list(by_format.items())
        self._running = True
        self._ticker = self._loop.create_task(self._tick())
        if self._pending:
            self._dispatch()

    def staged(self, config: AuditConfig, base_dir: Path) -> AuditLog:
        """Phase one of a reload: the sinks of `config`, built but not started (a missing token or an
        unwritable spool directory raises ValueError or OSError here, before anything changes)."""
        staged = AuditLog.from_config(config, base_dir, process=self.process)
        if staged._specs:
            staged._spool_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(staged._spool_dir, os.W_OK):
                raise OSError(f"gateway.audit.spool_dir: {staged._spool_dir} is not writable")
        return staged

    def adopt(self, staged: AuditLog) -> None:
        """Phase two, synchronous: serve `staged`'s sinks from the next event on. Events queued so far go to
        the current sinks. A sink whose config is unchanged keeps its channel; a changed one is retargeted
        (its backlog, memory and spool, follows it in order); a removed one delivers its backlog in the
        background, then stops."""
        self._dispatch()
        if not self._running and staged._specs:  # the first sink of a gateway that had none
            self._loop = asyncio.get_running_loop()
            self._running = True
            self._ticker = self._loop.create_task(self._tick())
        current = {channel.name: (channel, spec) for channel, spec in zip(self.channels, self._specs, strict=True)}
        channels: list[Channel] = []
        specs: list[SinkSpec] = []
        by_format: dict[str, list[Channel]] = {}
        for spec in staged._specs:
            directory = staged._spool_dir / spec.sink.name
            found = current.pop(spec.sink.name, None)
            if found is None:
                channel = Channel(spec.sink, Spool(directory, staged._spool_max_bytes, staged._segment_bytes),
                                  memory_events=spec.memory_events, batch_events=spec.batch_events,
                                  batch_bytes=spec.batch_bytes, metrics=self.metrics, on_loss=self._on_loss)
                channel.start()
            else:
                channel, before = found
                if before.key == spec.key:  # unchanged: the running sink stays (the staged one is unused)
                    spec = before
                channel.retarget(spec.sink, memory_events=spec.memory_events, batch_events=spec.batch_events,
                                 batch_bytes=spec.batch_bytes, spool_dir=directory,
                                 spool_max_bytes=staged._spool_max_bytes, spool_segment_bytes=staged._segment_bytes)
            channels.append(channel)
            specs.append(spec)
            by_format.setdefault(spec.format, []).append(channel)
        for channel, _ in current.values():
            channel.retire()
            self._retiring.append(channel)
        self.channels, self._specs, self._formats = channels, specs, list(by_format.items())
        self.enabled = bool(channels)
        self._queue_size, self._spool_dir = staged._queue_size, staged._spool_dir
        self._spool_max_bytes, self._segment_bytes = staged._spool_max_bytes, staged._segment_bytes

    async def discard(self, adopted: AuditLog | None = None) -> None:
        """Close the staged sinks nobody delivers to: all of them when the reload was refused, the ones
        `adopted` kept its running sink for when it was applied."""
        used = {id(spec.sink) for spec in adopted._specs} if adopted is not None else set()
        for spec in self._specs:
            if id(spec.sink) in used:
                continue
            with contextlib.suppress(Exception):
                await spec.sink.close()

    async def close(self, timeout: float = 2.0) -> None:
        """Hand over what is queued, give each sink `timeout` to take its memory, spool the rest."""
        retiring, self._retiring = self._retiring, []
        await asyncio.gather(*(channel.close(timeout) for channel in retiring))
        if not self._running:
            return
        self._dispatch()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._report_losses()
        self._dispatch()
        self._running = False
        await asyncio.gather(*(channel.close(timeout) for channel in self.channels))
        for channel in self.channels:
            channel.refresh_metrics()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for channel in self.channels + self._retiring:
                channel.refresh_metrics()
            for channel in [c for c in self._retiring if c.finished]:  # delivered all it held: close it
                self._retiring.remove(channel)
                await channel.close()
            self._report_losses()

    # ---- the queue ----------------------------------------------------------------------------------------

    def emit(self, event: dict[str, Any] | _RequestRecord) -> None:
        """Queue one event (any OCSF dict). Never blocks; a no-op when no sink is configured."""
        if not self.enabled:
            return
        pending = self._pending
        pending.append(event)
        if not self._running:
            return  # kept until start() (bounded by queue_size below)
        if len(pending) == 1:
            self._loop.call_soon(self._dispatch)  # type: ignore[union-attr]
        elif len(pending) >= self._queue_size:
            self._dispatch()

    def _dispatch(self) -> None:
        events = self._pending
        if not events or not self._running:
            return
        self._pending = []
        formats = self._formats
        # one event at a time, rendered, serialised and dropped: a request's OCSF event is a tree of ~40 dicts
        # and lists, so rendering a whole batch first held thousands of them at once and started a collection of
        # the cyclic GC's youngest generation (700 net allocations) nearly every batch; each channel still
        # receives the events in order
        for item in events:
            event = _render(item) if isinstance(item, tuple) else item
            for fmt, channels in formats:
                try:
                    line = orjson.dumps(to_ecs(event) if fmt == "ecs" else event, default=str,
                                        option=_DUMPS_OPTIONS)
                except (TypeError, orjson.JSONEncodeError) as exc:  # a bug in a caller: say so, keep the record
                    line = orjson.dumps({"class_uid": 0, "metadata": event.get("metadata"),
                                         "unmapped": {"bastion": {"unserialisable": repr(exc)}}},
                                        option=_DUMPS_OPTIONS)
                for channel in channels:
                    channel.offer(line)

    # ---- loss ---------------------------------------------------------------------------------------------

    def _on_loss(self, sink: str, count: int, reason: str) -> None:
        before = self._losses.get(sink, (0, reason))[0]
        self._losses[sink] = (before + count, reason)

    def _report_losses(self) -> None:
        """At most one alert per sink per second: a Detection Finding and a line on stderr."""
        losses, self._losses = self._losses, {}
        now = time.time()
        for sink, (count, reason) in losses.items():
            print(f"bastion: audit sink {sink}: {count} events lost ({reason})", file=sys.stderr, flush=True)
            self.emit(finding_event(
                self.ids.new(), detection="audit_events_lost", title=f"Audit events lost on sink {sink}",
                description=f"{count} audit events could not be spooled for sink {sink} ({reason}); they are "
                            "missing from that sink.",
                severity_id=5, key_kind="sink", key=sink, count=count, window=1.0, threshold=1, first_seen=now,
                last_seen=now, ip=None, subject=None, consumer=None, api=None, extra={"reason": reason}))

    @property
    def dropped(self) -> int:
        return sum(channel.dropped for channel in self.channels)

    @property
    def delivered(self) -> int:
        return sum(channel.delivered for channel in self.channels)

    # ---- event builders -----------------------------------------------------------------------------------

    def request(self, ctx: RequestContext, status: int, deny: Deny | None, duration: float,
                exceptions: tuple[str, ...] = (), upstream_status: int | None = None) -> None:
        """The request's event: API Activity (6003), or Authentication (3002) for an identity failure."""
        if self.enabled:  # rendered by `_dispatch`, off the request path: the context is final once accounted
            self.emit((self.ids.new(), ctx, status, deny, duration, exceptions, upstream_status))

    def protocol_error(self, peer: str, reason: str, detail: str, request_id: str, status: int) -> None:
        if self.enabled:
            self.emit(protocol_error_event(self.ids.new(), peer, reason, detail, request_id, status))

    def admin(self, action: str, outcome: str, **detail: Any) -> None:
        """An administrative action: `admin("config.reload", "failure", peer=..., errors=[...])`."""
        if self.enabled:
            self.emit(admin_event(self.ids.new(), action, outcome, detail))


def _render(record: _RequestRecord) -> dict[str, Any]:
    """A request record as its OCSF event; a builder bug costs that one event's detail, never the batch."""
    try:
        return request_event(*record)
    except Exception as exc:
        return {"class_uid": 0, "metadata": {"uid": record[0], "correlation_uid": record[1].request_id},
                "unmapped": {"bastion": {"unrenderable": repr(exc)}}}
