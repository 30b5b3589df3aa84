"""`serve --workers N`: the supervisor of N worker processes sharing the listening ports (SO_REUSEPORT).

The supervisor
- forks workers from a fork server that has the gateway's modules imported, so a worker that exits or is killed
  is replaced within a fraction of a second; restarts of one slot back off exponentially, and a slot that keeps
  crashing (`CRASH_LOOP` exits within `CRASH_WINDOW` seconds) makes `/readyz` answer 503 and raises one OCSF
  Detection Finding (`worker_crash_loop`) instead of spinning;
- holds the embedded shared state (one `MemoryState`, reached by the workers over their links) when no Redis is
  configured, so limits, blocks, revocations and detection counters are the same in every worker;
- serves the admin listener with every endpoint of the single process (blocks, revocations, Shared Signals,
  posture pages, `/config` with the hash every worker runs), with the same auth and audit;
- reloads all workers or none: every worker compiles the new config (`prepare`); only when all succeeded do
  they switch (`commit`), under a new generation number; otherwise every worker keeps the current config;
- drains on SIGTERM/SIGINT: workers stop accepting, finish in-flight requests (up to `limits.drain_timeout`),
  and the supervisor exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.audit.blocks import BlockList
from bastion.audit.events import finding_event
from bastion.audit.log import AuditLog
from bastion.compile import CompiledGateway, compile_config
from bastion.config.loader import ConfigError, load_config
from bastion.server.app import default_state
from bastion.server.http1 import Http1Connection
from bastion.server.link import Link, LinkClosed
from bastion.server.reload_files import check_referenced_files
from bastion.server.settings import make_admin_auth
from bastion.server.shared_fetch import FetchPool
from bastion.server.state_service import StateService
from bastion.server.supervisor_admin import serve_admin
from bastion.server.swap import (
    SwapRefused,
    abort_swap,
    carry_state,
    commit_swap,
    prepare_swap,
    retire_state,
    settle_swap,
)
from bastion.stages.base import Services
from bastion.state.memory import MemoryState

BACKOFF_START = 0.05  # the first restart of a slot is almost immediate
BACKOFF_MAX = 30.0
CRASH_WINDOW = 60.0
CRASH_LOOP = 5  # exits of one slot within CRASH_WINDOW: a crash loop
STABLE_AFTER = 10.0  # a worker up this long clears its slot's crash history
STATUS_TIMEOUT = 0.5
RELOAD_TIMEOUT = 60.0


@dataclass(slots=True)
class Slot:
    """One worker position. A restarted worker takes the slot's index (and its audit spool)."""

    index: int
    process: Any = None  # multiprocessing.Process
    link: Link | None = None
    status: dict[str, Any] = field(default_factory=dict)  # the worker's last answer (hash, generation, reasons)
    started: float = 0.0
    exits: deque[float] = field(default_factory=deque)  # monotonic times of recent exits
    next_start: float = 0.0
    crash_looping: bool = False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    """Runs until SIGTERM/SIGINT; `run()` returns the exit code."""

    def __init__(self, config_path: str, count: int, max_keys: int = 200_000) -> None:
        self.config_path = config_path
        self.base = Path(config_path).parent
        self.slots = [Slot(i + 1) for i in range(count)]
        self.generation = 1
        self.stopping = asyncio.Event()
        self.workdir = tempfile.mkdtemp(prefix="bastion-")
        self.socket_path = os.path.join(self.workdir, "supervisor.sock")
        self.metrics_dir = os.path.join(self.workdir, "metrics")
        os.mkdir(self.metrics_dir)
        self.state = MemoryState(max_keys=max_keys)  # the embedded shared state the workers reach over their links;
        # its rate-limit counters are bounded by `max_rate_limit_keys`
        self.state_service = StateService(self.state)
        self.fetches = FetchPool()
        self.compiled: CompiledGateway | None = None
        self.services = Services()  # its state: the embedded one, or Redis (what the admin API acts on)
        self._reload_lock = asyncio.Lock()
        self._context: Any = None
        self.connections: set[Http1Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # replaced state backends waiting out their grace

    # ---- start ---------------------------------------------------------------------------------------------

    def _multiprocess_metrics(self) -> Any:
        """Every process writes its metrics to files in `metrics_dir`; the admin listener sums them."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, values
        from prometheus_client.multiprocess import MultiProcessCollector

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # this process's own metrics go to the files too
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.metrics_dir)  # type: ignore[no-untyped-call]
        self.restarts = Counter("bastion_worker_restarts_total", "Workers restarted after an exit, by slot.",
                                ["worker"], registry=None)
        self.workers_alive = Gauge("bastion_workers_alive", "Workers running and linked.", registry=None,
                                   multiprocess_mode="livemax")
        self.crash_loops = Gauge("bastion_worker_crash_looping", "1 while a slot crash-loops.", ["worker"],
                                 registry=None, multiprocess_mode="livemax")
        return registry

    def _make_state(self, gw: Any) -> Any:
        return self.state if gw.state == "memory" else default_state(gw)

    async def _compile(self, loaded: Any = None, services: Services | None = None) -> CompiledGateway:
        loaded = loaded if loaded is not None else load_config(self.config_path)
        check_referenced_files(loaded)  # a missing or broken certificate, key, JWKS...: refused at its line
        compiled = compile_config(loaded, services or self.services)
        auth = make_admin_auth(compiled)
        if auth is not None:
            compiled.shared.admin_auth = auth
        for shared in compiled.shared.lifecycle():
            await shared.start()
        return compiled

    async def run(self) -> int:
        self.registry = self._multiprocess_metrics()
        from bastion.server.readiness import ReadinessGauge

        self.readiness_gauge = ReadinessGauge(None)
        gw = load_config(self.config_path).model.gateway
        self.audit = AuditLog.from_config(gw.audit, self.base, registry=None, process="supervisor")
        self.services.audit = self.audit
        self.services.state = self._make_state(gw)
        self.blocks = BlockList(self.services.state, audit=self.audit)
        self.services.blocks = self.blocks
        await self.audit.start()
        self.compiled = await self._compile()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["bastion.server.worker"])
        loop = asyncio.get_running_loop()
        unix = await asyncio.start_unix_server(self._accept, self.socket_path, limit=16 * 1024 * 1024)
        for slot in self.slots:
            self._spawn(slot)
        admin_server = await serve_admin(self, gw) if gw.admin.enabled else None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))
        self.audit.admin("gateway.start", "success", config_hash=self.compiled.config_hash,
                         workers=len(self.slots))
        print(f"bastion: supervisor pid {os.getpid()} running {len(self.slots)} workers", file=sys.stderr,
              flush=True)
        probe = loop.create_task(self._readiness_loop())
        while not self.stopping.is_set():
            self._watch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.05)
        probe.cancel()
        await self._stop(gw.limits.drain_timeout)
        if admin_server is not None:
            admin_server.close()
        unix.close()
        for connection in list(self.connections):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()
        self.audit.admin("gateway.stop", "success")
        await self.audit.close()
        if self.services.state is not self.state:
            with contextlib.suppress(Exception):
                await self.services.state.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return 0

    # ---- workers -------------------------------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        from bastion.server.worker import worker_entry

        slot.process = self._context.Process(
            target=worker_entry, args=(self.config_path, slot.index, self.socket_path, self.generation),
            name=f"bastion-worker-{slot.index}", daemon=False)
        slot.process.start()
        slot.started = time.monotonic()
        slot.link, slot.status = None, {}

    def _watch(self) -> None:
        """Reap exited workers and start the ones whose backoff has passed. Called every 50 ms."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is not None and not slot.process.is_alive():
                self._reaped(slot, now)
            if slot.process is None and now >= slot.next_start and not self.stopping.is_set():
                self.restarts.labels(str(slot.index)).inc()
                try:
                    self._spawn(slot)
                except OSError as exc:  # e.g. the fork server was killed: it is started again next time
                    slot.process = None
                    slot.next_start = now + BACKOFF_MAX / 10
                    print(f"bastion: cannot start worker {slot.index}: {exc!r}", file=sys.stderr, flush=True)
            elif slot.alive and slot.exits and now - slot.started > STABLE_AFTER and slot.link is not None:
                slot.exits.clear()  # up and linked long enough: its history is forgiven
                if slot.crash_looping:
                    slot.crash_looping = False
                    self.crash_loops.labels(str(slot.index)).set(0)
        self.workers_alive.set(sum(1 for s in self.slots if s.alive and s.link is not None))

    def _reaped(self, slot: Slot, now: float) -> None:
        from prometheus_client import multiprocess

        code = slot.process.exitcode
        pid = slot.pid
        slot.process.close()
        slot.process = None
        if slot.link is not None:
            asyncio.get_running_loop().create_task(slot.link.close())
        slot.link, slot.status = None, {}
        if pid is not None and _exists(pid):
            # not exited: the fork server that reports exits is gone (killed), so this worker can no longer be
            # watched. It drains and exits; a new one takes the slot.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if pid is not None:
            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]  # its live gauges no longer count
        slot.exits.append(now)
        while slot.exits and now - slot.exits[0] > CRASH_WINDOW:
            slot.exits.popleft()
        failures = len(slot.exits)
        delay = min(BACKOFF_START * 2 ** (failures - 1), BACKOFF_MAX)
        slot.next_start = now + delay
        print(f"bastion: worker {slot.index} (pid {pid}) exited with {code}; restarting in {delay:.2f}s",
              file=sys.stderr, flush=True)
        self.audit.admin("worker.exit", "failure", worker=slot.index, pid=pid, exit_code=code,
                         restart_in=round(delay, 3), exits_in_window=failures)
        if failures >= CRASH_LOOP and not slot.crash_looping:
            slot.crash_looping = True
            self.crash_loops.labels(str(slot.index)).set(1)
            wall = time.time()
            self.audit.emit(finding_event(
                self.audit.ids.new(), detection="worker_crash_loop", title=f"Worker {slot.index} crash-loops",
                description=f"worker {slot.index} exited {failures} times within {CRASH_WINDOW:g}s (last exit "
                            f"code {code}); restarts back off up to {BACKOFF_MAX:g}s and /readyz answers 503",
                severity_id=4, key_kind="worker", key=str(slot.index), count=failures, window=CRASH_WINDOW,
                threshold=CRASH_LOOP, first_seen=wall - (now - slot.exits[0]), last_seen=wall, ip=None,
                subject=None, consumer=None, api=None, extra={"exit_code": code}))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A worker connected: answer its state calls; its `hello` binds the link to its slot."""
        link: Link

        async def handle(op: str, args: list[Any]) -> Any:
            if op == "fetch":
                return await self.fetches.get(str(args[0]), float(args[1]), int(args[2]))
            if op == "hello":
                status = dict(args[0])
                for slot in self.slots:
                    if slot.index == status.get("index") and slot.pid == status.get("pid"):
                        slot.link, slot.status = link, status
                        return {"generation": self.generation}
                raise KeyError("unknown worker")
            return await self.state_service.handle(op, args)

        link = Link(reader, writer, handle, inline=StateService.INLINE)
        link.start()

    async def _stop(self, drain_timeout: float) -> None:
        """SIGTERM every worker (each drains its in-flight requests), wait, then kill what is left."""
        for slot in self.slots:
            if slot.alive:
                os.kill(slot.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + drain_timeout + 5
        while time.monotonic() < deadline and any(s.alive for s in self.slots):
            await asyncio.sleep(0.05)
        for slot in self.slots:
            if slot.alive:
                slot.process.kill()
                slot.process.join(1)

    # ---- reload --------------------------------------------------------------------------------------------

    async def reload(self, peer: str) -> tuple[bool, str]:
        """All workers switch to the config on disk, or none does."""
        async with self._reload_lock:
            swap = None
            try:
                loaded = load_config(self.config_path)
                current = self.compiled.config.model.gateway  # type: ignore[union-attr]
                swap = await prepare_swap(current, loaded.model.gateway, self.services, self.base,
                                          self._make_state)
                fresh = await self._compile(loaded, swap.services(self.services))
            except ConfigError as exc:
                self.audit.admin("config.reload", "failure", peer=peer, errors=[str(d) for d in exc.diagnostics])
                return False, str(exc)
            except SwapRefused as exc:
                self.audit.admin("config.reload", "failure", peer=peer, errors=[str(exc)])
                return False, f"reload refused, every worker keeps generation {self.generation}: {exc}"
            except Exception as exc:
                if swap is not None:
                    await abort_swap(swap, keep=self.state)
                self.audit.admin("config.reload", "failure", peer=peer, errors=[repr(exc)])
                return False, repr(exc)
            linked = [s for s in self.slots if s.link is not None]
            refusal = None
            if len(linked) < len(self.slots):
                refusal = "not every worker is running: retry once /readyz answers 200"
            answers = await asyncio.gather(*(s.link.call("prepare", peer, timeout=RELOAD_TIMEOUT)  # type: ignore[union-attr]
                                             for s in linked), return_exceptions=True)
            for slot, answer in zip(linked, answers, strict=True):
                if refusal is not None:
                    break
                if isinstance(answer, BaseException):
                    refusal = f"worker {slot.index}: {answer}"
                elif not answer.get("ok"):
                    refusal = str(answer.get("message"))
            if refusal is not None:
                await asyncio.gather(*(s.link.call("abort", timeout=5.0) for s in linked if s.link is not None),
                                     return_exceptions=True)
                await self._close_shared(fresh)
                await abort_swap(swap, keep=self.state)
                self.audit.admin("config.reload", "failure", peer=peer, errors=[refusal])
                return False, f"reload refused, every worker keeps generation {self.generation}: {refusal}"
            if swap.state is not None:  # blocks and revocations in force move to the new backend first
                await carry_state(self.services.state, swap.state)
            self.generation += 1
            commits = await asyncio.gather(*(s.link.call("commit", self.generation, timeout=5.0)  # type: ignore[union-attr]
                                             for s in linked), return_exceptions=True)
            for slot, status in zip(linked, commits, strict=True):
                if isinstance(status, dict):
                    slot.status = status
            retired_state = commit_swap(swap, self.services)
            await settle_swap(swap, self.services)
            if retired_state is not None:
                task = asyncio.get_running_loop().create_task(retire_state(retired_state, keep=self.state))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            old, self.compiled = self.compiled, fresh
            if old is not None:
                await self._close_shared(old)
            self.audit.admin("config.reload", "success", peer=peer, config_hash=fresh.config_hash,
                             generation=self.generation)
            return True, f"generation {self.generation}: config {fresh.config_hash} loaded by every worker"

    async def _close_shared(self, compiled: CompiledGateway) -> None:
        for shared in compiled.shared.lifecycle():
            with contextlib.suppress(Exception):
                await shared.close()

    # ---- readiness and admin -------------------------------------------------------------------------------

    async def readiness(self) -> dict[str, Any]:
        """Ready when every slot runs a linked worker, none crash-loops, and every worker is ready itself."""
        reasons: list[str] = ["stopping: draining"] if self.stopping.is_set() else []
        linked = [s for s in self.slots if s.link is not None]
        for slot in self.slots:
            if slot.crash_looping:
                reasons.append(f"worker_crash_loop: worker {slot.index} exited {len(slot.exits)} times within "
                               f"{CRASH_WINDOW:g}s")
            elif slot.link is None:
                reasons.append(f"worker_down: worker {slot.index} is starting")
        answers = await asyncio.gather(*(s.link.call("status", timeout=STATUS_TIMEOUT)  # type: ignore[union-attr]
                                         for s in linked), return_exceptions=True)
        for slot, answer in zip(linked, answers, strict=True):
            if isinstance(answer, BaseException):
                reasons.append(f"worker_unresponsive: worker {slot.index} did not answer in {STATUS_TIMEOUT}s")
                continue
            slot.status = answer
            reasons += [f"{r.split(':', 1)[0]}: worker {slot.index}:{r.split(':', 1)[-1]}"
                        for r in answer.get("reasons", [])]
        self.readiness_gauge.set(reasons)
        return {"reasons": reasons, **self.info()}

    async def _readiness_loop(self) -> None:
        """Keep `bastion_ready` current without a probe calling /readyz."""
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await self.readiness()

    def info(self) -> dict[str, Any]:
        compiled = self.compiled
        workers = [{"index": s.index, "pid": s.pid, "config_hash": s.status.get("config_hash"),
                    "generation": s.status.get("generation"), "linked": s.link is not None,
                    "crash_looping": s.crash_looping} for s in self.slots]
        expected = compiled.config_hash if compiled is not None else None
        return {"config_hash": expected, "generation": self.generation, "config_file": self.config_path,
                "routes": len(compiled.routes) if compiled is not None else 0, "pid": os.getpid(),
                "workers": workers, "consistent": all(w["config_hash"] == expected for w in workers)}


def _exists(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def supervise(config_path: str, count: int, max_keys: int = 200_000) -> int:
    """`serve --workers N` (N >= 2)."""
    from bastion.server.settings import install_uvloop

    install_uvloop()
    with contextlib.suppress(LinkClosed):
        return asyncio.run(Supervisor(config_path, count, max_keys).run())
    return 1
