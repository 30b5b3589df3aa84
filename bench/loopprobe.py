"""Where the event loop's time goes: CPU per loop callback and per loop iteration, in a running gateway.

    .venv/bin/python bench/loopprobe.py -c bastion.yaml --out /tmp/probe.json [--seconds 20] [--warmup 1.5]
    python bench/run.py --only chain-jwt-cached --targets bastion \
        --bastion '.venv/bin/python bench/loopprobe.py --out /tmp/probe.json'   # the bench's own load

Runs `bastion serve` (one process) on a uvloop loop that times every callback it runs in thread CPU time
(`time.thread_time`): figures that do not depend on how busy the machine is, only on what the gateway does.

- Callbacks: everything scheduled with `call_soon`, `call_later` or `call_at` (a C task schedules its steps
  through `loop.call_soon`, so task steps are included, named by coroutine), and every protocol callback of
  the client and upstream connections: CPU histogram, the longest ones, CPU by name.
- Blocking: a callback during which the thread made a voluntary context switch slept in the kernel (a blocking
  write, a lock): the loop stood still for its wall time whatever its CPU time says.
- Per request (keep-alive, one request at a time per connection): the CPU the loop spent in callbacks between
  the request's first read and the first write of its response, i.e. its own work plus everything served
  before it, in three parts (read -> written upstream, -> upstream response read, -> response written), how
  many steps of its connection's task it took to reach the upstream, and the same wait in wall-clock time.
- Garbage collections (`gc.callbacks`), and with `--iterations` each loop iteration (a callback that re-queues
  itself runs once per turn: the turn's CPU and how many client reads it served; the loop then never sleeps
  in poll, so use it only while the gateway is saturated).

On SIGTERM/SIGINT, or after `--seconds`, writes the JSON summary to `--out`. SIGUSR1 (and `--warmup`) drops the
figures so far. Diagnosis only: the wrappers cost a few microseconds per callback (no throughput from a probed
gateway), and the client transport is wrapped, so a listener with TLS or h2c is served but not meant for it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/loopprobe.py`: make `bench` and `bastion` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

# upper bounds of the CPU histogram, milliseconds
BOUNDS_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
LONG_MS = 1.0  # callbacks and iterations at least this long are kept one by one
KEEP = 200  # at most this many of them


def _hist() -> list[int]:
    return [0] * (len(BOUNDS_MS) + 1)


def _bucket(ms: float) -> int:
    for index, bound in enumerate(BOUNDS_MS):
        if ms <= bound:
            return index
    return len(BOUNDS_MS)


def callback_name(callback: Any) -> str:
    """What a loop callback runs: a task's coroutine, a bound method's class and name, a function's name."""
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Future):
        task = owner
        coro = task.get_coro() if isinstance(task, asyncio.Task) else None
        if coro is not None:
            name = getattr(coro, "__qualname__", None) or type(coro).__qualname__
            return f"task:{name}"
        return f"future:{getattr(callback, '__name__', type(callback).__name__)}"
    func = getattr(callback, "__func__", callback)
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    if owner is not None and "." not in name:
        name = f"{type(owner).__qualname__}.{name}"
    return name


class Stats:
    """Everything the probe counts, in thread CPU milliseconds."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.by_name: dict[str, list[float]] = {}  # name -> [count, total ms, max ms]
        self.hist = _hist()
        self.long: list[tuple[float, float, str]] = []  # (ms, seconds since start, name)
        self.iterations = 0
        self.iter_hist = _hist()
        self.iter_long: list[tuple[float, float, int]] = []  # (ms, seconds since start, client reads)
        self.reads_per_iter: dict[int, int] = {}
        self.reads = 0  # client reads in the current iteration
        self.gc: list[tuple[int, float]] = []  # (generation, ms)
        self.depth = 0
        self.blocked: dict[str, list[float]] = {}  # name -> [callbacks that slept in the kernel, wall ms of them]
        self.callback_start = 0.0
        self.iteration_no = 0
        self.work = 0.0  # CPU ms of every timed callback so far (idle time and the loop's own work excluded)
        # per request: the callback CPU the gateway spent between the request's first read and the first write
        # of its response (its own work and everything served before it): the tail a saturated gateway adds,
        # in CPU, so that it does not depend on what else the machine ran
        self.waits: list[float] = []
        self.waits_at: list[tuple[float, float]] = []  # (ms, seconds since start) of the longest
        # the same wait in its three parts: read -> request written upstream (the pipeline's turn), written
        # upstream -> upstream response read (the upstream, and the loop's turn to poll), -> response written
        self.phases: tuple[list[float], list[float], list[float]] = ([], [], [])
        self.steps_before_upstream: dict[int, int] = {}  # task steps a request took to reach the upstream
        self.wall_waits: list[float] = []  # the same wait in wall-clock ms (machine load shows here)
        self.tasks: dict[Any, TimedProtocol] = {}  # a client connection's serving task -> its probe

    def now(self) -> float:
        return self.work + self.open_ms()

    def record(self, name: str, ms: float) -> None:
        row = self.by_name.get(name)
        if row is None:
            row = self.by_name[name] = [0, 0.0, 0.0]
        row[0] += 1
        row[1] += ms
        self.work += ms
        if ms > row[2]:
            row[2] = ms
        self.hist[_bucket(ms)] += 1
        if ms >= LONG_MS:
            self.long.append((ms, time.monotonic() - self.started, name))
            if len(self.long) > 4 * KEEP:
                self.long = sorted(self.long, reverse=True)[:KEEP]

    def open_ms(self) -> float:
        return (_clock() - self.callback_start) * 1000.0 if self.depth else 0.0

    def read(self, conn: TimedProtocol) -> None:
        self.reads += 1

    def iteration(self, ms: float) -> None:
        self.iterations += 1
        self.iteration_no += 1
        self.iter_hist[_bucket(ms)] += 1
        self.reads_per_iter[self.reads] = self.reads_per_iter.get(self.reads, 0) + 1
        if ms >= LONG_MS:
            self.iter_long.append((ms, time.monotonic() - self.started, self.reads))
            if len(self.iter_long) > 4 * KEEP:
                self.iter_long = sorted(self.iter_long, reverse=True)[:KEEP]
        self.reads = 0

    def summary(self) -> dict[str, Any]:
        labels = [f"<={b}ms" for b in BOUNDS_MS] + [f">{BOUNDS_MS[-1]}ms"]
        names = sorted(self.by_name.items(), key=lambda kv: -kv[1][2])
        return {
            "seconds": round(time.monotonic() - self.started, 1),
            "callbacks": sum(int(r[0]) for r in self.by_name.values()),
            "callback_cpu_histogram": dict(zip(labels, self.hist, strict=True)),
            "by_name_longest_first": [
                {"name": n, "count": int(r[0]), "total_ms": round(r[1], 1), "mean_us": round(1000 * r[1] / r[0], 1),
                 "max_ms": round(r[2], 3)} for n, r in names[:40]],
            "longest_callbacks": [{"ms": round(ms, 3), "at_s": round(at, 2), "name": n}
                                  for ms, at, n in sorted(self.long, reverse=True)[:40]],
            # a callback that made a voluntary context switch slept in the kernel (a blocking write, a lock, a
            # page-cache throttle): the loop stood still for its wall time, whatever its CPU time says
            "blocking_callbacks": {n: {"count": int(r[0]), "wall_ms_total": round(r[1], 2),
                                       "wall_ms_max": round(r[2], 3)} for n, r in self.blocked.items()},
            "iterations": self.iterations,
            "iteration_cpu_histogram": dict(zip(labels, self.iter_hist, strict=True)),
            "longest_iterations": [{"ms": round(ms, 3), "at_s": round(at, 2), "client_reads": r}
                                   for ms, at, r in sorted(self.iter_long, reverse=True)[:20]],
            "client_reads_per_iteration": dict(sorted(self.reads_per_iter.items())),
            "request_wait_cpu_ms": _percentiles(self.waits),
            "request_wait_wall_ms": _percentiles(self.wall_waits),
            "task_steps_before_upstream": dict(sorted(self.steps_before_upstream.items())),
            "wait_read_to_upstream_write_ms": _percentiles(self.phases[0]),
            "wait_upstream_write_to_read_ms": _percentiles(self.phases[1]),
            "wait_upstream_read_to_response_ms": _percentiles(self.phases[2]),
            "longest_waits": [{"ms": round(ms, 3), "at_s": round(at, 2)}
                              for ms, at in sorted(self.waits_at, reverse=True)[:20]],
            "gc": {"collections": len(self.gc), "max_ms": round(max((ms for _, ms in self.gc), default=0.0), 3),
                   "total_ms": round(sum(ms for _, ms in self.gc), 1),
                   "by_generation": {g: sum(1 for gen, _ in self.gc if gen == g) for g in (0, 1, 2)},
                   "max_ms_by_generation": {g: round(max((ms for gen, ms in self.gc if gen == g), default=0.0), 3)
                                            for g in (0, 1, 2)},
                   "tracked_objects_at_end": len(gc.get_objects()), "frozen": gc.get_freeze_count()},
        }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    at = {f"p{q}": ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] for q in (50, 90, 99, 99.9)}
    return {"n": len(ordered), **{k: round(v, 3) for k, v in at.items()}, "max": round(ordered[-1], 3)}


STATS = Stats()
_clock = time.thread_time
_rusage = resource.getrusage
_THREAD = resource.RUSAGE_THREAD


def timed(callback: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
    label = name or callback_name(callback)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):  # a step of a client connection's task: counted for its request
        inner = callback

        def step(*args: Any) -> Any:
            conn = STATS.tasks.get(owner)
            if conn is not None and conn.request_started is not None:
                conn.steps += 1
            return inner(*args)

        callback = step

    def run(*args: Any) -> Any:
        if STATS.depth:  # nested (a callback run inline by another): counted in the outer one
            return callback(*args)
        STATS.depth = 1
        switches = _rusage(_THREAD).ru_nvcsw
        wall = time.perf_counter()
        start = STATS.callback_start = _clock()
        try:
            return callback(*args)
        finally:
            STATS.depth = 0
            STATS.record(label, (_clock() - start) * 1000.0)
            if _rusage(_THREAD).ru_nvcsw != switches:
                ms = (time.perf_counter() - wall) * 1000.0
                row = STATS.blocked.get(label)
                if row is None:
                    row = STATS.blocked[label] = [0, 0.0, 0.0]
                row[0] += 1
                row[1] += ms
                row[2] = max(row[2], ms)

    return run


class TimedTransport(asyncio.Transport):
    """The client transport as the gateway sees it: notes when a request's response begins."""

    def __init__(self, inner: Any, conn: TimedProtocol) -> None:
        super().__init__()
        self._inner = inner
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _answered(self) -> None:
        conn = self._conn
        if not conn.client:  # an upstream connection: the request leaves the pipeline
            client = STATS.tasks.get(asyncio.current_task())
            if client is not None and client.request_started is not None and client.sent is None:
                client.sent = STATS.now()
                STATS.phases[0].append(client.sent - client.request_started)
                STATS.steps_before_upstream[client.steps] = STATS.steps_before_upstream.get(client.steps, 0) + 1
                conn.serving = client
            return
        started = conn.request_started
        if started is not None:
            conn.request_started = None
            now = STATS.now()
            if conn.sent is not None and conn.answered is not None:
                STATS.phases[2].append(now - conn.answered)
            conn.sent = conn.answered = None
            ms = now - started
            STATS.wall_waits.append((time.perf_counter() - conn.wall_started) * 1000.0)
            STATS.waits.append(ms)
            if ms >= LONG_MS:
                STATS.waits_at.append((ms, time.monotonic() - STATS.started))
                if len(STATS.waits_at) > 4 * KEEP:
                    STATS.waits_at = sorted(STATS.waits_at, reverse=True)[:KEEP]

    def write(self, data: Any) -> None:
        self._answered()
        self._inner.write(data)

    def writelines(self, data: Any) -> None:
        self._answered()
        self._inner.writelines(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return bool(self._inner.is_closing())

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return bool(self._inner.is_reading())

    def get_write_buffer_size(self) -> int:
        return int(self._inner.get_write_buffer_size())

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return bool(self._inner.can_write_eof())

    def write_eof(self) -> None:
        self._inner.write_eof()

    def set_protocol(self, protocol: Any) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> Any:
        return self._conn.inner


class TimedProtocol(asyncio.Protocol):
    """Stands between a transport and the gateway's protocol and times each of its callbacks."""

    def __init__(self, inner: Any, client: bool) -> None:
        self.inner = inner
        kind = type(inner).__qualname__
        self._client = self.client = client
        self.request_started: float | None = None  # STATS work clock at the request's first read
        self.steps = 0  # steps of the connection's task since the request's first read
        self.wall_started = 0.0
        self.sent: float | None = None  # ... when its request was written upstream
        self.answered: float | None = None  # ... when the upstream's response arrived
        self.serving: TimedProtocol | None = None  # an upstream connection: the client whose request it carries
        self._data = timed(inner.data_received, f"{kind}.data_received")
        self._made = timed(inner.connection_made, f"{kind}.connection_made")
        self._lost = timed(inner.connection_lost, f"{kind}.connection_lost")
        eof = getattr(inner, "eof_received", None)
        self._eof = timed(eof, f"{kind}.eof_received") if eof else None
        self._pause = timed(inner.pause_writing, f"{kind}.pause_writing")
        self._resume = timed(inner.resume_writing, f"{kind}.resume_writing")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made(TimedTransport(transport, self))
        task = getattr(self.inner, "_task", None)
        if self._client and task is not None:
            STATS.tasks[task] = self

    def data_received(self, data: bytes) -> None:
        if self._client:
            STATS.read(self)
            if self.request_started is None:
                self.request_started = STATS.now()
                self.wall_started = time.perf_counter()
                self.steps = 0
        else:
            client, self.serving = self.serving, None
            if client is not None and client.sent is not None:
                client.answered = STATS.now()
                STATS.phases[1].append(client.answered - client.sent)
        self._data(data)

    def eof_received(self) -> bool | None:
        return self._eof() if self._eof else None

    def connection_lost(self, exc: Exception | None) -> None:
        STATS.tasks.pop(getattr(self.inner, "_task", None), None)
        self._lost(exc)

    def pause_writing(self) -> None:
        self._pause()

    def resume_writing(self) -> None:
        self._resume()


class ProbedLoop(uvloop.Loop):  # type: ignore[misc]
    """A uvloop loop whose callbacks are timed (see the module docstring)."""

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:
        return super().call_soon(timed(callback), *args, context=context)

    def call_later(self, delay: float, callback: Any, *args: Any, context: Any = None) -> Any:
        return super().call_later(delay, timed(callback), *args, context=context)

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        return super().call_at(when, timed(callback), *args, context=context)

    async def create_server(self, factory: Any, *args: Any, **kwargs: Any) -> Any:
        return await super().create_server(lambda: TimedProtocol(factory(), True), *args, **kwargs)

    async def create_connection(self, factory: Any, *args: Any, **kwargs: Any) -> Any:
        transport, wrapper = await super().create_connection(lambda: TimedProtocol(factory(), False), *args,
                                                             **kwargs)
        return transport, wrapper.inner


def _gc_probe() -> None:
    start = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            start[0] = _clock()
        else:
            STATS.gc.append((int(info["generation"]), (_clock() - start[0]) * 1000.0))

    gc.callbacks.append(on_gc)


def _iterations(loop: asyncio.AbstractEventLoop) -> None:
    """One marker per loop iteration: uvloop runs what `call_soon` queued once per turn, so this re-queued
    callback runs once per iteration and sees the CPU the whole turn took."""
    last = [_clock()]

    def mark() -> None:
        now = _clock()
        STATS.iteration((now - last[0]) * 1000.0)
        last[0] = now
        uvloop.Loop.call_soon(loop, mark)  # not timed: it is the boundary itself

    uvloop.Loop.call_soon(loop, mark)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/loopprobe.py", description=__doc__.split("\n\n")[0])
    p.add_argument("verb", nargs="?", choices=["serve"], help="accepted, so that bench/run.py can run the probe "
                   "as its Bastion: --bastion '.venv/bin/python bench/loopprobe.py --out FILE'")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: at SIGTERM)")
    p.add_argument("--warmup", type=float, default=0.0,
                   help="seconds after start-up whose figures are dropped (connections opening)")
    p.add_argument("--iterations", action="store_true",
                   help="mark each loop iteration (a callback that re-queues itself: the loop never sleeps in "
                        "poll, so an idle gateway spins; use only while it is saturated)")
    args = p.parse_args(argv)
    from bastion.server.app import Runtime
    from bastion.server.settings import settle_heap

    async def serve() -> None:
        runtime = Runtime(args.config)
        await runtime.start()
        settle_heap()  # as `bastion serve`
        loop = asyncio.get_running_loop()
        print(f"loopprobe: serving {runtime.bound}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        if args.seconds:
            loop.call_later(args.seconds, stop.set)

        def restart() -> None:  # figures from here on; the connections' serving tasks stay known
            global STATS
            tasks, STATS = STATS.tasks, Stats()
            STATS.tasks = tasks

        if args.warmup:
            uvloop.Loop.call_later(loop, args.warmup, restart)
        loop.add_signal_handler(signal.SIGUSR1, restart)  # figures from now on (a load generator's next run)
        global STATS
        STATS = Stats()  # start-up is not what we measure
        _gc_probe()
        if args.iterations:
            _iterations(loop)
        await stop.wait()
        summary = STATS.summary()
        args.out.write_text(json.dumps(summary, indent=1))
        await runtime.stop(0.5)

    loop = ProbedLoop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
