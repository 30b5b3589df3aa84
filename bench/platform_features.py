"""Platform features under load (issue 19): a pool of two upstream targets against one, tracing off / at 1% /
at 100%, and WebSocket message relay. Writes the `platform` section of bench/RESULTS.md.

    python bench/platform_features.py                 # about 2 minutes; needs nginx, wrk and taskset
    python bench/platform_features.py --seconds 3     # shorter rounds

Layout (2 cores), as bench/run.py: Bastion alone on CPU 1; the upstream(s) (nginx, 1 worker each), wrk, the
OTLP sink and the WebSocket client and echo server on CPU 0. *CPU µs* is Bastion's own utime+stime per request
(or per message) from /proc, the figure the shared load side distorts least.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import nginx, procs
from bench import wrk as wrk_mod

REPO = Path(__file__).resolve().parent.parent
BASTION = [sys.executable, "-m", "bastion"]

CONFIG = """
version: 1
gateway:
  listeners: [{{address: 127.0.0.1, port: {port}}}]
  admin: {{address: 127.0.0.1, port: {admin}}}
  limits: {{drain_timeout: 2s}}
{tracing}
classes:
  open: {{identity: {{required: false, methods: []}}}}
apis:
  - name: bench
    owner: bench@example.com
    class: open
    upstream: {upstream}
    routes:
      - {{name: get, path: /, methods: [GET]}}
      - {{name: ws, path: /ws, methods: [GET], websocket: {{messages_per_second: 1000000, burst: 1000000}}}}
"""

SINK = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

WS_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None, max_size=None):
        await asyncio.Event().wait()
asyncio.run(main())
"""

WS_CLIENT = """
import asyncio, sys, time
from websockets.asyncio.client import connect
URL, CONNS, MESSAGES, WINDOW = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), 32
payload = "x" * 64
async def one():
    async with connect(URL, compression=None, ping_interval=None) as ws:
        sent = received = 0
        while received < MESSAGES:
            while sent < MESSAGES and sent - received < WINDOW:
                await ws.send(payload); sent += 1
            await ws.recv(); received += 1
async def main():
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(CONNS)))
    print(time.perf_counter() - start)
asyncio.run(main())
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="length of one wrk round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--messages", type=int, default=5000, help="WebSocket messages per connection")
    p.add_argument("--proxy-cpu", type=int, default=1)
    p.add_argument("--load-cpu", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = p.parse_args()
    missing = procs.missing_tools()
    if missing:
        print(f"missing: {', '.join(missing)}; {procs.INSTALL_HINT}", file=sys.stderr)
        return 2
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bastion-platform-") as tmp, procs.Processes(Path(tmp)) as children:
        base = Path(tmp)
        ports = {name: procs_free_port() for name in ("a", "b", "gw", "admin", "sink", "ws")}
        for name in ("a", "b"):
            conf = nginx.write(base / f"up-{name}", nginx.upstream_conf(base / f"up-{name}", ports[name]))
            child = children.start(f"upstream-{name}", procs.pinned(args.load_cpu, nginx.command(conf)))
            procs.wait_port(child, ports[name])
        sink = children.start("otlp-sink", procs.pinned(args.load_cpu, [sys.executable, "-c", SINK,
                                                                         str(ports["sink"])]))
        procs.wait_port(sink, ports["sink"])
        echo = children.start("ws-echo", procs.pinned(args.load_cpu, [sys.executable, "-c", WS_ECHO,
                                                                       str(ports["ws"])]))
        procs.wait_port(echo, ports["ws"])
        one = f"http://127.0.0.1:{ports['a']}"
        two = f"[http://127.0.0.1:{ports['a']}, http://127.0.0.1:{ports['b']}]"
        tracing = ("  tracing: {{enabled: true, endpoint: 'http://127.0.0.1:{sink}/v1/traces', sample_ratio: {r}, "
                   "export_interval: 500ms}}")
        for label, upstream, trace in (
            ("one upstream", one, ""),
            ("pool of two targets (round robin)", two, ""),
            ("one upstream, tracing 1%", one, tracing.format(sink=ports["sink"], r=0.01)),
            ("one upstream, tracing 100%", one, tracing.format(sink=ports["sink"], r=1.0)),
        ):
            results = [_http_round(children, base, ports, args, upstream, trace) for _ in range(args.rounds)]
            rps = statistics.median(r[0] for r in results)
            cpu = statistics.median(r[1] for r in results)
            errors = sum(r[2] for r in results)
            rows.append((label, f"{rps:,.0f} req/s", f"{cpu:.0f} µs/req", f"{errors}"))
            print(rows[-1], flush=True)
        ws_url_upstream = f"http://127.0.0.1:{ports['ws']}"
        results = [_ws_round(children, base, ports, args, ws_url_upstream) for _ in range(args.rounds)]
        rate = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        rows.append(("WebSocket echo, 64-byte messages (relayed both ways)", f"{rate:,.0f} msg/s each way",
                     f"{cpu:.1f} µs/relayed msg", "0"))
        print(rows[-1], flush=True)
    text = _section(rows, args)
    print(text)
    if not args.no_write:
        _write(text)
    return 0


def procs_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_gateway(children: procs.Processes, base: Path, ports: dict[str, int], args: argparse.Namespace,
                   upstream: str, tracing: str) -> procs.Child:
    path = base / "bastion.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(port=ports["gw"], admin=ports["admin"], upstream=upstream,
                                                  tracing=tracing)))
    child = children.start("bastion", procs.pinned(args.proxy_cpu, [*BASTION, "serve", "-c", str(path)]))
    procs.wait_ready(child, ports["admin"], ports["gw"])
    return child


def _http_round(children: procs.Processes, base: Path, ports: dict[str, int], args: argparse.Namespace,
                upstream: str, tracing: str) -> tuple[float, float, int]:
    gateway = _start_gateway(children, base, ports, args, upstream, tracing)
    try:
        url = f"http://127.0.0.1:{ports['gw']}/"
        warm = wrk_mod.command(url, duration=1, connections=args.connections)
        subprocess.run(procs.pinned(args.load_cpu, warm), capture_output=True, check=True)
        before = procs.cpu_seconds(gateway.pid)
        out = subprocess.run(procs.pinned(args.load_cpu, wrk_mod.command(
            url, duration=args.seconds, connections=args.connections)), capture_output=True, text=True, check=True)
        used = procs.cpu_seconds(gateway.pid) - before
        result = wrk_mod.parse(out.stdout)
        return result.rps, used / max(1, result.requests) * 1e6, result.errors
    finally:
        children.stop(gateway)


def _ws_round(children: procs.Processes, base: Path, ports: dict[str, int], args: argparse.Namespace,
              upstream: str) -> tuple[float, float]:
    gateway = _start_gateway(children, base, ports, args, upstream, "")
    try:
        url = f"ws://127.0.0.1:{ports['gw']}/ws"
        conns = 8
        before = procs.cpu_seconds(gateway.pid)
        out = subprocess.run(procs.pinned(args.load_cpu, [sys.executable, "-c", WS_CLIENT, url, str(conns),
                                                          str(args.messages)]),
                             capture_output=True, text=True, check=True, timeout=600)
        used = procs.cpu_seconds(gateway.pid) - before
        seconds = float(out.stdout.strip().splitlines()[-1])
        messages = conns * args.messages
        return messages / seconds, used / (2 * messages) * 1e6
    finally:
        children.stop(gateway)


def _section(rows: list[tuple[str, str, str, str]], args: argparse.Namespace) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    lines = [
        "## Platform features (issue 19)", "",
        f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (commit {commit}) by `python bench/platform_features.py "
        f"--seconds {args.seconds:g} --rounds {args.rounds}`: medians of the rounds. **Noisy:** the machine was "
        "shared with other work during the run, so read differences under ~15% as noise; the CPU figure "
        "(Bastion's own utime+stime per request) is the steadier one.", "",
        "| scenario | throughput | Bastion CPU | errors |", "|---|---:|---:|---:|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows], "",
        f"- Plain GET on a route with the default controls, `wrk -t1 -c{args.connections}` against one Bastion process on its own "
        "CPU; the upstreams are nginx (1 worker each) on the load CPU.",
        "- Tracing sends OTLP/HTTP to a sink process that reads and discards; 1% records one request in a "
        "hundred; the others make no span at all (the sampling decision comes first) but still carry a trace id "
        "in their audit event.",
        "- WebSocket: 8 connections, each keeping 32 messages of 64 bytes in flight to an echo server "
        "(`websockets`); *each way* counts client→upstream messages per second; CPU per relayed message "
        "divides by both directions.", "",
    ]
    return "\n".join(lines)


def _write(text: str) -> None:
    path = REPO / "bench" / "RESULTS.md"
    current = path.read_text()
    start, end = "<!-- bench:platform -->", "<!-- /bench:platform -->"
    block = f"{start}\n{text}{end}\n"
    if start in current:
        head, rest = current.split(start, 1)
        current = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        current = current.rstrip("\n") + "\n\n" + block
    path.write_text(current)


if __name__ == "__main__":
    raise SystemExit(main())
