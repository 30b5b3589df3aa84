"""One worker of `serve --workers N`: a `Runtime` without admin listener, linked to its supervisor.

The link carries the embedded shared state (when `gateway.state` is `memory`) and the supervisor's control
calls: `status`, and the two phases of an all-or-none reload (`prepare`, then `commit` or `abort`). A worker
ignores SIGHUP (a reload of one worker alone would break "all or none"), drains on SIGTERM, and drains and
exits when its supervisor goes away (the link closes), so no worker outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from bastion.audit.log import AuditLog
from bastion.compile import CompiledGateway
from bastion.config.loader import load_config
from bastion.server.app import Runtime, default_state
from bastion.server.link import Link, connect
from bastion.server.settings import install_uvloop, settle_heap
from bastion.server.shared_fetch import SharedFetcher
from bastion.state.supervised import SupervisedState


class WorkerControl:
    """Answers the supervisor's control calls for one runtime."""

    def __init__(self, runtime: Runtime, index: int) -> None:
        self.runtime = runtime
        self.index = index
        self.generation = 0
        self._pending: CompiledGateway | None = None

    async def handle(self, op: str, args: list[Any]) -> Any:
        if op == "status":
            return self.status()
        if op == "prepare":
            return await self.prepare(str(args[0]) if args else "supervisor")
        if op == "commit":
            return await self.commit(int(args[0]))
        if op == "abort":
            return await self.abort()
        if op == "forget_block":  # an operator lifted a block: drop this worker's cached copy at once
            blocks = self.runtime.services.blocks
            if blocks is not None:
                blocks.forget(str(args[0]), str(args[1]))
            return True
        raise KeyError(op)

    def status(self) -> dict[str, Any]:
        gateway = self.runtime.gateway
        return {"index": self.index, "pid": os.getpid(), "generation": self.generation,
                "config_hash": gateway.compiled.config_hash if gateway is not None else None,
                "reasons": self.runtime.readiness()}

    async def prepare(self, peer: str) -> dict[str, Any]:
        if self._pending is not None:  # a prepare the supervisor never concluded: drop it
            await self.runtime.abort(self._pending)
            self._pending = None
        compiled, message = await self.runtime.prepare(peer)
        self._pending = compiled
        return {"ok": compiled is not None, "message": message,
                "config_hash": compiled.config_hash if compiled is not None else None}

    async def commit(self, generation: int) -> dict[str, Any]:
        compiled, self._pending = self._pending, None
        if compiled is not None:
            self.runtime.commit(compiled)
            self.generation = generation
            await self.runtime.settle()
        return self.status()

    async def abort(self) -> bool:
        compiled, self._pending = self._pending, None
        if compiled is not None:
            await self.runtime.abort(compiled)
        return True


async def run_worker(config_path: str, index: int, socket_path: str, generation: int) -> int:
    runtime = Runtime(config_path, worker=True, serve_admin=False)
    control = WorkerControl(runtime, index)
    control.generation = generation
    link: Link = await connect(socket_path, control.handle)
    gw = load_config(config_path).model.gateway

    def make_state(gw: Any) -> Any:  # without Redis, the embedded shared state: the supervisor's
        return SupervisedState(link) if gw.state == "memory" else default_state(gw)

    runtime.make_state = make_state
    # key sets fetched once for all workers (one fetch per rotation, not one per worker)
    if runtime.services.identity_fetcher is None:
        runtime.services.identity_fetcher = SharedFetcher(link)
    runtime.services.audit = AuditLog.from_config(gw.audit, runtime.config_path.parent,
                                                  registry=runtime.metrics.registry, process=f"worker-{index}")
    await runtime.start()
    settle_heap()
    await link.call("hello", control.status(), timeout=5.0)
    print(f"bastion: worker {index} pid {os.getpid()} serving", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # reloads come from the supervisor, to every worker
    waits = [loop.create_task(stopping.wait()), loop.create_task(link.closed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    # Bounded: the supervisor kills a worker that outlives its drain, but a worker whose supervisor is gone
    # (the link closed) has nobody to do that; it must not linger on its listener's port.
    drain = runtime.gateway.compiled.config.model.gateway.limits.drain_timeout if runtime.gateway else 5.0
    stopping_task = loop.create_task(runtime.stop())
    done, _ = await asyncio.wait({stopping_task}, timeout=drain + 5)
    if not done:
        print(f"bastion: worker {index} pid {os.getpid()} did not stop within {drain + 5:g}s; exiting",
              file=sys.stderr, flush=True)
        os._exit(1)
    await link.close()
    return 0


def worker_entry(config_path: str, index: int, socket_path: str, generation: int) -> None:
    """The target of a worker process (forked by the supervisor's fork server, modules already imported)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(run_worker(config_path, index, socket_path, generation))
        sys.exit(code)
