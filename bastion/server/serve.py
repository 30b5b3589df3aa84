"""`bastion serve`: one gateway process (`app.Runtime`), or a supervisor of N workers (`supervisor`).

Kept apart from both so that neither imports the other: the supervisor's workers build their own `Runtime`.
"""

from __future__ import annotations

import asyncio
import os
import sys

from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.native import build_label
from bastion.server.app import Runtime
from bastion.server.settings import install_uvloop, settle_heap


def serve(config_path: str, workers: int | None = None) -> int:
    """`bastion serve`: one process, or a supervisor of N workers."""
    loaded = load_config(config_path)  # fail fast, before forking anything
    compile_config(loaded)
    count = workers or loaded.model.gateway.workers
    install_uvloop()
    if count <= 1:
        return asyncio.run(_serve_one(config_path, worker=False, serve_admin=True))
    from bastion.server.supervisor import supervise

    return supervise(config_path, count, loaded.model.gateway.limits.max_rate_limit_keys)


async def _serve_one(config_path: str, *, worker: bool, serve_admin: bool) -> int:
    runtime = Runtime(config_path, worker=worker, serve_admin=serve_admin)
    await runtime.start()
    settle_heap()
    listening = ", ".join(f"http://{h}:{p}" for h, p in runtime.bound)
    print(f"bastion: pid {os.getpid()} serving {listening} ({build_label()})", file=sys.stderr, flush=True)
    await runtime.run_forever()
    return 0


def worker_main(config_path: str) -> int:
    install_uvloop()
    return asyncio.run(_serve_one(config_path, worker=True, serve_admin=False))
