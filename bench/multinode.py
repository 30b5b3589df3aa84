"""A Redis-backed rate limit across three gateway instances: accuracy (admitted / limit) and the CPU it adds.

    python bench/multinode.py                  # limit 3,000 per minute, lease 20, 8 s of load on each node
    python bench/multinode.py --lease 0 --duration 5

Three `bastion serve` processes share one redis-server (all on 127.0.0.1); three wrk processes (one per node,
16 connections each) hammer GET /items, far above the limit, for `--duration` seconds.
Admitted = the 2xx answers. The target is admitted ≤ limit x 1.02 + 3 x lease (the lease slack: units leased
in the window and spent after it). The same run with `state: memory` (three independent limits) gives the CPU
per request without Redis; the difference is what the shared limit costs. The machine's 2 CPUs are shared by
the gateways, Redis and wrk: CPU figures are noisy, say so when quoting them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs, wrk
from bench.report import write_section
from bench.workers import PREAMBLE, RESULTS, config, free_port, wait_ready


def run(workdir: Path, state: str, limit: int, lease: int, duration: float) -> dict[str, Any]:
    upstream = free_port()
    children = [subprocess.Popen([sys.executable, "-m", "bastion.demo.upstream", str(upstream)])]
    nodes = []
    try:
        for i in range(3):
            port, admin = free_port(), free_port()
            path = workdir / f"node{i}.yaml"
            path.write_text(config(port, admin, upstream, state=state,
                                   rate_limit=f"{{name: shared, limit: {limit}, window: 1m, key: route, lease: {lease}}}"))
            children.append(subprocess.Popen([sys.executable, "-m", "bastion", "serve", "-c", str(path)],
                                             stderr=subprocess.DEVNULL))
            nodes.append((port, admin, children[-1].pid))
        for _, admin, _ in nodes:
            wait_ready(admin)
        before = sum(procs.cpu_seconds(pid) for _, _, pid in nodes)
        loads = [subprocess.Popen(wrk.command(f"http://127.0.0.1:{port}/items", duration=duration, connections=16),
                                  stdout=subprocess.PIPE, text=True) for port, _, _ in nodes]
        reports = [wrk.parse(load.communicate()[0]) for load in loads]
        cpu = sum(procs.cpu_seconds(pid) for _, _, pid in nodes) - before
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(15)
    requests = sum(r.requests for r in reports)
    admitted = requests - sum(r.non_2xx for r in reports)
    return {"requests": requests, "admitted": admitted, "cpu_us": cpu / max(requests, 1) * 1e6,
            "socket_errors": sum(r.socket_errors for r in reports)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--lease", type=int, default=20)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if procs.missing_tools(("wrk", "redis-server")):
        print("bench: needs wrk and redis-server", file=sys.stderr)
        return 2
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            shared = run(Path(tmp), f"redis://127.0.0.1:{redis_port}/0", args.limit, args.lease, args.duration)
            alone = run(Path(tmp), "memory", args.limit, 0, args.duration)
    finally:
        redis.kill()
        redis.wait()
    bound = args.limit * 1.02 + 3 * args.lease
    body = "\n".join([
        "## Three instances, one Redis: a shared rate limit (bench/multinode.py)",
        "",
        f"Limit {args.limit:,} per minute keyed on the route, `lease: {args.lease}`, three `bastion serve` processes "
        f"on one redis-server, 3 wrk x 16 connections for {args.duration:g} s (a minute edge may fall inside the run: the sliding window then admits a little of the next minute). Gateways, Redis "
        "and wrk share 2 CPUs: CPU figures are noisy.",
        "",
        "| | requests | admitted | admitted ÷ limit | target (limit x 1.02 + 3 x lease) | CPU per request |",
        "|---|---|---|---|---|---|",
        f"| Redis, shared | {shared['requests']:,} | {shared['admitted']:,} | {shared['admitted'] / args.limit:.3f} | "
        f"≤ {bound:,.0f}: {'met' if shared['admitted'] <= bound else 'MISSED'} | {shared['cpu_us']:.0f} us |",
        f"| memory, per instance | {alone['requests']:,} | {alone['admitted']:,} | "
        f"{alone['admitted'] / args.limit:.3f} (three separate limits) | | {alone['cpu_us']:.0f} us |",
        "",
        f"The shared limit adds {shared['cpu_us'] - alone['cpu_us']:.0f} us of gateway CPU per request (most requests "
        "are refused ones here, each asking Redis once the lease is spent).",
    ])
    print(body)
    if not args.no_write:
        write_section(RESULTS, "multinode", body, PREAMBLE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
