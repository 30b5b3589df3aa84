"""One channel per sink: memory while the sink keeps up, the disk spool when it does not, replay in order.

```
offer(line) ──► memory (bounded) ──► deliver ──► sink
        │ full, or spool not empty        ▲
        └──────► spool (disk) ────────────┘ replayed first, in order, once the sink answers again
```
- Nothing waits on the sink but the channel's own task; `offer` is synchronous and never blocks.
- Order: while the spool holds anything, new events are appended to it, so the spool is always the oldest part
  of the stream. A memory batch in flight when memory overflows is written to the spool first; if that batch
  then succeeds, it is skipped in the spool (no duplicate).
- Loss: only when the spool cannot take an event (its size cap or a full disk); counted and reported through
  `on_loss` (the audit log turns it into an alert).
- Reload: `retarget` points a running channel at a new sink (its backlog, memory and spool, goes there, in
  order) and moves its spool directory; `retire` lets a channel whose sink left the config deliver its backlog
  to that sink, then stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

from bastion.audit.metrics import AuditMetrics
from bastion.audit.sinks import Sink, SinkError
from bastion.audit.spool import Spool

_BACKOFF_START = 0.05
_BACKOFF_MAX = 2.0


class Channel:
    """Delivers one sink's events: a memory buffer, a spool and one task."""

    def __init__(self, sink: Sink, spool: Spool, *, memory_events: int = 10_000, batch_events: int = 500,
                 batch_bytes: int = 1024 * 1024, metrics: AuditMetrics | None = None,
                 on_loss: Callable[[str, int, str], None] | None = None) -> None:
        self.sink = sink
        self.name = sink.name
        self.spool = spool
        self.memory: deque[bytes] = deque()
        self.memory_events = memory_events
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self.last_error = ""
        self._metrics = metrics
        self._on_loss = on_loss
        self._inflight: list[bytes] | None = None
        self._inflight_spooled = False
        self._skip = 0  # events at the spool's head already delivered (an in-flight batch that was spilled)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._retiring = False  # the sink left the config: deliver the backlog, then stop
        self._moving_to: Path | None = None  # a spool directory to move to once the current spool is empty
        self._old_sinks: list[Sink] = []  # replaced by `retarget`, closed once no batch is in flight to them
        if metrics is not None:
            name = self.name
            self._gauges = (metrics.queue_depth.labels(name), metrics.spool_bytes.labels(name),
                            metrics.spool_events.labels(name))
            self._delivered_counter = metrics.delivered.labels(name)
            self._errors_counter = metrics.sink_errors.labels(name)

    def refresh_metrics(self) -> None:
        """Set the gauges (called periodically; plain sets work in multiprocess mode, callbacks do not)."""
        if self._metrics is not None:
            depth, spool_bytes, spool_events = self._gauges
            depth.set(len(self.memory) + len(self._inflight or ()))
            spool_bytes.set(self.spool.bytes)
            spool_events.set(self.spool.events)

    # ---- producer side (synchronous, never blocks) --------------------------------------------------------

    def offer(self, line: bytes) -> None:
        if self.spool.events:
            self._spool([line])
        elif len(self.memory) >= self.memory_events:
            self._spill([line])
        else:
            self.memory.append(line)
        if not self._wake.is_set():
            self._wake.set()

    def _spill(self, extra: list[bytes]) -> None:
        """Move everything held in memory (an in-flight batch first) to the spool, in order."""
        lines: list[bytes] = []
        if self._inflight is not None and not self._inflight_spooled:
            lines += self._inflight
            self._inflight_spooled = True
            self._skip = len(self._inflight)
        lines += self.memory
        lines += extra
        self.memory.clear()
        self._spool(lines)

    def _spool(self, lines: list[bytes]) -> None:
        lost = self.spool.append(lines)
        if lost:
            self._lose(lost, "spool_full" if self.spool.bytes + 4096 > self.spool.max_bytes else "disk_error")

    def _lose(self, count: int, reason: str) -> None:
        self.dropped += count
        if self._metrics is not None:
            self._metrics.dropped.labels(self.name, reason).inc(count)
        if self._on_loss is not None:
            self._on_loss(self.name, count, reason)

    # ---- the channel's task -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"audit-sink-{self.name}")

    async def _run(self) -> None:
        backoff = _BACKOFF_START
        while True:
            if self._closing and not self.memory:
                return  # the spool is on disk already: it is replayed after the next start
            if self._inflight is None:
                await self._close_old_sinks()
            if self._moving_to is not None and not self.spool.events:
                self._move_spool(self._moving_to)
            if self._retiring and not self.memory and not self.spool.events:
                self._closing = True  # everything was delivered: `close` ends the sink and the spool
                return
            if self.spool.events:
                ok = await self._from_spool()
            elif self.memory:
                ok = await self._from_memory()
            else:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if ok:
                backoff = _BACKOFF_START
            else:
                if self._closing:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _deliver(self, lines: list[bytes]) -> bool:
        try:
            await self.sink.deliver(lines)
        except SinkError as exc:
            self.errors += 1
            self.last_error = str(exc)
            if self._metrics is not None:
                self._errors_counter.inc()
            return False
        self.delivered += len(lines)
        if self._metrics is not None:
            self._delivered_counter.inc(len(lines))
        return True

    async def _from_memory(self) -> bool:
        batch: list[bytes] = []
        size = 0
        memory = self.memory
        while memory and len(batch) < self.batch_events and (not batch or size + len(memory[0]) <= self.batch_bytes):
            line = memory.popleft()
            batch.append(line)
            size += len(line)
        self._inflight, self._inflight_spooled = batch, False
        ok = await self._deliver(batch)
        spooled = self._inflight_spooled
        self._inflight = None
        if ok:
            if spooled:  # it is at the spool's head too: skip it there
                self._skip_head()
            return True
        if not spooled:  # failed: it and everything after it wait in the spool, in order
            lines = batch + list(memory)
            memory.clear()
            self._spool(lines)
        self._skip = 0
        return False

    def _skip_head(self) -> None:
        count, self._skip = self._skip, 0
        while count:
            lines, position = self.spool.read(count, 1 << 30)
            if not lines:
                return
            self.spool.commit(position, len(lines))
            count -= len(lines)

    async def _from_spool(self) -> bool:
        lines, position = self.spool.read(self.batch_events, self.batch_bytes)
        if not lines:  # the count and the files disagree (a file removed by hand): trust the files
            self.spool.events = 0
            return True
        if not await self._deliver(lines):
            return False
        self.spool.commit(position, len(lines))
        return True

    # ---- reload -------------------------------------------------------------------------------------------

    def retarget(self, sink: Sink, *, memory_events: int, batch_events: int, batch_bytes: int,
                 spool_dir: Path, spool_max_bytes: int, spool_segment_bytes: int) -> None:
        """Deliver from now on to `sink` (the same name, a changed config), backlog first, in order. The spool
        moves to `spool_dir` at once when that directory is free (a rename), else once the spool is empty."""
        if sink is not self.sink:
            self._old_sinks.append(self.sink)
            self.sink = sink
        self.memory_events, self.batch_events, self.batch_bytes = memory_events, batch_events, batch_bytes
        self.spool.max_bytes, self.spool.segment_bytes = spool_max_bytes, spool_segment_bytes
        if spool_dir != self.spool.directory:
            self._move_spool(spool_dir)
        self._wake.set()

    def retire(self) -> None:
        """The sink left the config: deliver what is held for it (memory and spool), then stop."""
        self._retiring = True
        self._wake.set()

    @property
    def finished(self) -> bool:
        """True once the channel's task has ended (a retired channel that delivered its backlog)."""
        return self._task is not None and self._task.done()

    def _move_spool(self, directory: Path) -> None:
        """Continue in `directory`: rename the spool there (same filesystem, free) or, when the spool is
        empty, simply open a new one there. Position and content are the files', so nothing is lost; a spool
        that cannot move yet (another filesystem, or events already there) moves once it is empty."""
        self._moving_to = None
        old = self.spool
        if old.events:
            if not _free(directory):
                self._moving_to = directory
                return
            old.close()  # its writer reopens on the next append if the rename fails
            try:
                directory.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    directory.rmdir()
                os.rename(old.directory, directory)
            except OSError:
                self._moving_to = directory
                return
        else:
            old.close()
        self.spool = Spool(directory, old.max_bytes, old.segment_bytes)

    async def _close_old_sinks(self) -> None:
        sinks, self._old_sinks = self._old_sinks, []
        for sink in sinks:
            with contextlib.suppress(Exception):
                await sink.close()

    # ---- shutdown -----------------------------------------------------------------------------------------

    async def close(self, timeout: float = 2.0) -> None:
        """Deliver what is held in memory if the sink answers within `timeout`, spool the rest, stop."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._inflight is not None and not self._inflight_spooled:  # cancelled mid-delivery
            self.memory.extendleft(reversed(self._inflight))
            self._inflight = None
        if self.memory:
            lines = list(self.memory)
            self.memory.clear()
            self._spool(lines)
        self.spool.close()
        await self._close_old_sinks()
        with contextlib.suppress(Exception):
            await self.sink.close()


def _free(directory: Path) -> bool:
    """True when `directory` does not exist or is empty (a spool can be renamed there)."""
    try:
        return not any(directory.iterdir())
    except FileNotFoundError:
        return True
    except OSError:
        return False
