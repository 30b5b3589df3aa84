"""Microbenchmark: the cost of one rate-limit decision, in-process (and one Redis round trip when available).

    python bench/micro_ratelimit.py [--n 200000] [--redis]

Prints microseconds per call for: the memory backend alone, the full stage (key, hit, RateLimit headers) with
one and with three limits, and with `--redis` the same stage against a redis-server started on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bastion.context import Identity, RequestContext
from bastion.stages.base import RouteInfo
from bastion.stages.traffic import TrafficShared, build_rate_limits
from bastion.stages.traffic.config import TrafficPolicy
from bastion.stages.traffic.limiter import Limiter
from bastion.state import Hit, StateBackend, open_state
from bastion.state.memory import MemoryState

ROUTE = RouteInfo("orders", "get-order", "partner", "/orders/{id}", frozenset({"GET"}))
ONE = [{"name": "per-consumer", "limit": 10**9, "window": "1m", "key": "consumer"}]
THREE = [*ONE, {"name": "burst", "algorithm": "token_bucket", "rate": 10**6, "burst": 10**9, "key": "client_ip"},
         {"name": "route", "limit": 10**9, "window": "1s", "key": "route"}]


def ctx(i: int) -> RequestContext:
    c = RequestContext(method="GET", raw_target="/orders/1", path="/orders/1", query="", headers=[],
                       client_ip=f"10.0.{i % 250}.{i % 200}", request_id="r", start=0.0)
    c.identity = Identity("jwt", subject="s", consumer=f"consumer-{i % 1000}")
    return c


async def stage_cost(state: StateBackend, limits: list[dict], n: int) -> float:
    stage = build_rate_limits(TrafficPolicy.model_validate({"rate_limits": limits}), ROUTE,
                              TrafficShared(Limiter(state), time.time))
    assert stage is not None
    contexts = [ctx(i) for i in range(1000)]
    started = time.perf_counter()
    for i in range(n):
        await stage.check(contexts[i % 1000])
    return (time.perf_counter() - started) / n * 1e6


def memory_cost(n: int) -> float:
    state = MemoryState()
    hits = [[Hit(f"k{i}", "sliding_window", 10**9, 60)] for i in range(1000)]
    now = time.time()
    started = time.perf_counter()
    for i in range(n):
        state.hit_now(hits[i % 1000], now)
    return (time.perf_counter() - started) / n * 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--redis", action="store_true", help="also measure against a local redis-server")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {args.n} calls each")
    print(f"memory backend hit_now, 1 limit:        {memory_cost(args.n):6.2f} us/call")
    print(f"stage on memory, 1 limit (+headers):    {await stage_cost(MemoryState(), ONE, args.n):6.2f} us/call")
    print(f"stage on memory, 3 limits (+headers):   {await stage_cost(MemoryState(), THREE, args.n):6.2f} us/call")
    if args.redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found")
        port = free_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            state = open_state(f"redis://127.0.0.1:{port}/0")
            n = max(1000, args.n // 20)
            print(f"stage on Redis, 1 limit, sequential:    {await stage_cost(state, ONE, n):6.2f} us/call")
            print(f"stage on Redis, 3 limits, sequential:   {await stage_cost(state, THREE, n):6.2f} us/call")
            leased = [{**ONE[0], "lease": 20}]
            print(f"stage on Redis, 1 limit, lease 20:      {await stage_cost(state, leased, n):6.2f} us/call")
            await state.close()
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:  # the gateway runs on uvloop
        uvloop.run(main())
