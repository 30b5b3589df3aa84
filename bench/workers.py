"""`serve --workers 2` against one worker, and what a worker crash costs under load; writes bench/RESULTS.md.

    python bench/workers.py                    # 3 rounds of 10 s, 64 connections
    python bench/workers.py --rounds 1 --duration 3

For each of `--workers 1` and `--workers 2` (every process of the gateway, supervisor included, unpinned, with
the upstream and wrk on the same 2 CPUs: the load generator competes with the gateway, so the figures say what
this machine allows, not what two free cores give): wrk's req/s and p99 over GET /items with a rate limit
(the embedded shared state: one call to the supervisor per request with `--workers 2`, none with one process),
and the gateway's CPU time per request (utime+stime of its whole process tree ÷ requests). Then one more run
with `--workers 2` during which one worker is killed (`kill -9`) halfway: the errors wrk saw, and how long the
slot took to serve again. Only 127.0.0.1 is used; every child is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/workers.py`: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs, wrk
from bench.report import write_section

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
PREAMBLE = "# Bastion benchmark results\n"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(port: int, admin: int, upstream: int,
           rate_limit: str = "{name: per-client, limit: 100000000, window: 1m, key: client_ip}",
           state: str | None = None) -> str:
    """GET /items of a `shop` API open to anyone, under one `rate_limit` (a YAML flow mapping), with the gateway's
    shared `state` when one is given (bench/multinode.py and tests/e2e/test_ratelimit_cluster.py share it)."""
    return textwrap.dedent(f"""
        version: 1
        gateway:
          listeners: [{{address: 127.0.0.1, port: {port}}}]
          admin: {{address: 127.0.0.1, port: {admin}}}
        """) + (f"  state: {state}\n" if state else "") + textwrap.dedent(f"""\
        classes:
          open:
            identity: {{required: false}}
            traffic: {{rate_limits: [{rate_limit}]}}
        apis:
          - name: shop
            owner: bench@example.com
            class: open
            upstream: http://127.0.0.1:{upstream}
            routes: [{{name: items, path: /items, methods: [GET]}}]
        """)


def admin_json(admin: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=5) as response:
        return dict(json.loads(response.read()))


def wait_ready(admin: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gateway not ready")


def run_once(workdir: Path, workers: int, duration: float, connections: int, kill: bool = False) -> dict[str, Any]:
    port, admin, upstream = free_port(), free_port(), free_port()
    path = workdir / f"bastion-{workers}.yaml"
    path.write_text(config(port, admin, upstream))
    up = subprocess.Popen([sys.executable, "-m", "bastion.demo.upstream", str(upstream)])
    gw = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "-c", str(path), "--workers", str(workers)],
                          stderr=subprocess.DEVNULL)
    result: dict[str, Any] = {"workers": workers}
    try:
        wait_ready(admin)
        before = procs.cpu_seconds(gw.pid)
        if kill:
            victim = admin_json(admin, "/config")["workers"][0]["pid"]

            def killer() -> None:
                time.sleep(duration / 2)
                os.kill(victim, signal.SIGKILL)
                start = time.monotonic()
                while time.monotonic() - start < 10:
                    slot = admin_json(admin, "/config")["workers"][0]
                    if slot["linked"] and slot["pid"] != victim:
                        result["back_after_s"] = round(time.monotonic() - start, 3)
                        return
                    time.sleep(0.01)

            thread = threading.Thread(target=killer)
            thread.start()
        out = subprocess.run(wrk.command(f"http://127.0.0.1:{port}/items", duration=duration,
                                         connections=connections), capture_output=True, text=True, check=True)
        if kill:
            thread.join()
        cpu = procs.cpu_seconds(gw.pid) - before
        report = wrk.parse(out.stdout)
        result.update(rps=report.rps, p99_us=report.p99_us, errors=report.errors, requests=report.requests,
                      cpu_us_per_request=cpu / max(report.requests, 1) * 1e6)
    finally:
        for proc in (gw, up):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()
    missing = procs.missing_tools(("wrk",))
    if missing:
        print(f"bench: missing {', '.join(missing)}; {procs.INSTALL_HINT}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for workers in (1, 2):
                runs[workers].append(run_once(Path(tmp), workers, args.duration, args.connections))
        crash = run_once(Path(tmp), 2, args.duration, args.connections, kill=True)
    rows = []
    for workers, samples in runs.items():
        rows.append(f"| `--workers {workers}` | {statistics.median(s['rps'] for s in samples):,.0f} | "
                    f"{statistics.median(s['p99_us'] for s in samples) / 1000:.1f} ms | "
                    f"{statistics.median(s['cpu_us_per_request'] for s in samples):.0f} us | "
                    f"{sum(s['errors'] for s in samples)} |")
    body = "\n".join([
        "## Workers: `--workers 2` against one process (bench/workers.py)",
        "",
        f"GET /items with a rate limit, wrk {args.connections} connections, {args.rounds} x {args.duration:g} s "
        "medians; gateway, upstream and wrk share the machine's 2 CPUs (wrk and the upstream take CPU the second "
        "worker would use, so this is what the machine allows, not the scaling on free cores). CPU per request "
        "is the gateway's whole process tree (supervisor included).",
        "",
        "| gateway | req/s | p99 | CPU per request | errors |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"`kill -9` of one worker halfway through a {args.duration:g} s run with `--workers 2`: "
        f"{crash['errors']} errors out of {crash['requests']:,} requests (wrk's socket errors and non-2xx: the "
        f"killed worker's in-flight requests and connections), the slot serving again after "
        f"{crash.get('back_after_s', 'n/a')} s.",
    ])
    print(body)
    if not args.no_write:
        write_section(RESULTS, "workers", body, PREAMBLE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
