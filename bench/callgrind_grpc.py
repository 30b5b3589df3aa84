"""Instructions per gRPC unary call through the gateway, counted by callgrind: repeatable on a loaded machine.

    python bench/callgrind_grpc.py [--calls 200] [--concurrency 8] [--pure]

The `grpc-unary` scenario of bench/run.py (its h2c listener and `bench-grpc` API, config from bench/scenarios.py)
with the gateway process under `valgrind --tool=callgrind`, instrumentation off until the warm-up calls are done
(startup under valgrind takes minutes on a busy machine). Two windows of `calls` and `2 x calls` calls, each
between a zeroing and a dump of callgrind's counters (`callgrind_control`): instructions per call = (second -
first) / calls, which cancels what does not depend on the call count. The profile of each window stays in the
output directory for `callgrind_annotate`. The grpcio upstream and the load client run outside valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import scenarios
from bench.grpc_bench import METHOD, REQUEST, RESPONSE

REPO = Path(__file__).resolve().parents[1]


async def _calls(call: object, n: int, concurrency: int) -> None:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            reply = await call(REQUEST, timeout=120)  # type: ignore[operator]
            if reply != RESPONSE:
                raise RuntimeError(f"unexpected reply {reply!r}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


async def _drive(port: int, pid: int, calls: int, concurrency: int) -> None:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        await _calls(call, 100, concurrency)  # warm-up, uninstrumented
        _control("-i", "on", str(pid))
        await _calls(call, 100, concurrency)  # warm-up, instrumented (callgrind's own first-time costs)
        for n in (calls, 2 * calls):
            _control("-z", str(pid))
            await _calls(call, n, concurrency)
            _control("-d", f"window-{n}", str(pid))


def _total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    stop = time.monotonic() + timeout
    while time.monotonic() < stop:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"port {port} not open after {timeout:g}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/callgrind_grpc.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=200, help="calls in the first window (the second has twice)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--pure", action="store_true", help="BASTION_PURE=1: the gateway runs pure Python")
    p.add_argument("--out", type=Path, default=None, help="directory for the profiles (default: a temp dir)")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="callgrind-grpc-"))
    out.mkdir(parents=True, exist_ok=True)
    scenario = next(s for s in scenarios.SCENARIOS if s.name == "grpc-unary")
    variant = scenarios.VARIANTS[scenario.gateway]
    config = out / "bastion.yaml"
    config.write_text(scenarios.dump(scenarios.bastion_config([scenario], {}, variant, out)))
    env = {**os.environ, "PYTHONPATH": str(REPO), **({"BASTION_PURE": "1"} if args.pure else {})}
    upstream = subprocess.Popen([sys.executable, str(REPO / "bench" / "grpc_bench.py"), "serve", "--port",
                                 str(scenarios.GRPC_UPSTREAM_PORT)])
    gateway = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                f"--callgrind-out-file={out / 'callgrind.out'}", sys.executable, "-m", "bastion",
                                "serve", "-c", str(config)], env=env, stdout=subprocess.DEVNULL,
                               stderr=(out / "gateway.log").open("wb"))
    try:
        _wait_port(scenarios.GRPC_UPSTREAM_PORT, upstream, 60)
        _wait_port(variant.port, gateway, 1800)
        asyncio.run(_drive(variant.port, gateway.pid, args.calls, args.concurrency))
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait(60)
        upstream.wait(60)
    first, second = (_total(out / f"callgrind.out.{n}") for n in (1, 2))
    print(f"{(second - first) / args.calls:,.0f} instructions per call "
          f"({first:,} for {args.calls} calls, {second:,} for {2 * args.calls}; profiles in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
