"""Benchmark Bastion against nginx on one machine and write bench/RESULTS.md.

    python bench/run.py                       # every scenario, 3 rounds of 10 s, 64 connections
    python bench/run.py --only get --rounds 1 --duration 3
    python bench/run.py --targets direct-upstream,nginx   # the harness without Bastion

Layout (2 cores): the upstream (nginx, 1 worker) and wrk (-t1) on CPU 0; the proxy under test (nginx as a
reverse proxy, 1 worker, or Bastion, one process) on CPU 1. Each round runs every (scenario, target) once in
turn, so targets are compared under the same conditions; figures are medians over the rounds. Besides wrk's
req/s and latency, the proxy's own CPU time per request (utime+stime from /proc ÷ requests) is measured: the
figure the shared load side cannot distort. Only 127.0.0.1 is used; every child is stopped at the end, also on
Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import nginx, procs, report, scenarios, wrk
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
    args = p.parse_args(argv)
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


class Bench:
    """One run: the servers, the scenarios, the rounds."""

    def __init__(self, args: argparse.Namespace, tmp: Path, children: procs.Processes) -> None:
        self.args = args
        self.tmp = tmp
        self.children = children
        self.pids: dict[str, int] = {}
        self.ports = {"direct-upstream": scenarios.UPSTREAM_PORT, "nginx": scenarios.NGINX_PORT,
                      "nginx-defaults": scenarios.NGINX_DEFAULTS_PORT, "bastion": scenarios.LISTEN_PORT}
        self.down: dict[str, str] = {}  # target -> why it cannot be measured
        self.prepared: dict[str, Prepared] = {}
        self.readiness = ""
        self.bastion_cmd = bastion_command(args.bastion)
        self.config_text = ""
        self.quiet_before: list[float] = []  # busy share of the busier CPU just before each round

    # -- servers ------------------------------------------------------------------------------------------
    def start(self) -> None:
        args = self.args
        busy = [p for p in (*self.ports.values(), scenarios.ADMIN_PORT) if procs.port_open(p)]
        if busy:
            raise RuntimeError(f"ports already in use on 127.0.0.1: {busy} (another benchmark running?)")
        conf = nginx.write(self.tmp / "upstream", nginx.upstream_conf(self.tmp / "upstream", self.ports[
            "direct-upstream"]))
        upstream = self.children.start("upstream", procs.pinned(args.load_cpu, nginx.command(conf)))
        procs.wait_port(upstream, self.ports["direct-upstream"])
        self.pids["direct-upstream"] = upstream.pid
        for target, keepalive_requests in (("nginx", nginx.UNCAPPED), ("nginx-defaults", None)):
            if target not in args.targets:
                continue
            text = nginx.proxy_conf(self.tmp / target, self.ports[target], self.ports["direct-upstream"],
                                    keepalive_requests)
            proxy = self.children.start(target, procs.pinned(args.proxy_cpu, nginx.command(
                nginx.write(self.tmp / target, text))))
            procs.wait_port(proxy, self.ports[target])
            self.pids[target] = proxy.pid
        if "bastion" in args.targets:
            self._start_bastion()

    def _start_bastion(self) -> None:
        for scenario in self.args.scenarios:
            if scenario.prepare:
                self.prepared[scenario.name] = scenario.prepare(self.tmp)
        config = scenarios.bastion_config(self.args.scenarios, self.prepared)
        self.config_text = scenarios.dump(config)
        path = self.tmp / "bastion.yaml"
        path.write_text(self.config_text)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = procs.pinned(self.args.proxy_cpu, [*self.bastion_cmd, "serve", "-c", str(path)])
        child = self.children.start("bastion", argv, env=env)
        try:
            self.readiness = procs.wait_ready(child, scenarios.ADMIN_PORT, self.ports["bastion"])
        except RuntimeError as exc:
            self.down["bastion"] = f"did not start: {' '.join(argv)}\n{exc}"
            log(f"!! Bastion did not start: {exc}")
            return
        self.pids["bastion"] = child.pid

    # -- measuring ----------------------------------------------------------------------------------------
    def preflight(self, scenario: Scenario, target: str) -> str | None:
        """One request through the target: None when it answers 2xx, else why not."""
        headers = dict(h.split(":", 1) for h in self.headers(scenario))
        headers = {k.strip(): v.strip() for k, v in headers.items()}
        if scenario.body is not None:
            headers.setdefault("Content-Type", "application/json")
        try:
            status, body = procs.http_status(self.ports[target], scenario.method, scenario.path,
                                             scenario.body, headers)
        except OSError as exc:
            return f"{scenario.method} {scenario.path}: {exc}"
        if not 200 <= status < 300:
            return f"{scenario.method} {scenario.path} -> {status} {body[:300]!r}"
        return None

    def headers(self, scenario: Scenario) -> tuple[str, ...]:
        extra = self.prepared[scenario.name].headers if scenario.name in self.prepared else ()
        return (*scenario.headers, *extra)

    def wrk_argv(self, scenario: Scenario, target: str, duration: float) -> list[str]:
        url = f"http://127.0.0.1:{self.ports[target]}{scenario.path}"
        argv = wrk.command(url, duration=duration, connections=self.args.connections,
                           script=str(scenario.script) if scenario.script else None,
                           headers=self.headers(scenario))
        return procs.pinned(self.args.load_cpu, argv)

    def measure(self, scenario: Scenario, target: str, duration: float) -> Sample:
        argv = self.wrk_argv(scenario, target, duration)
        pid, proxy_cpu, load_cpu = self.pids[target], self.args.proxy_cpu, self.args.load_cpu
        cpu0, px0, ld0 = procs.cpu_seconds(pid), procs.core_ticks(proxy_cpu), procs.core_ticks(load_cpu)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
        cpu1, px1, ld1 = procs.cpu_seconds(pid), procs.core_ticks(proxy_cpu), procs.core_ticks(load_cpu)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        return Sample(wrk.parse(done.stdout), cpu1 - cpu0, busy(px0, px1), busy(ld0, ld1),
                      on_proxy_core=target != "direct-upstream")

    def alive(self, target: str) -> bool:
        for child in self.children.children:
            if child.pid == self.pids.get(target) and child.proc.poll() is not None:
                self.down[target] = f"exited with {child.proc.returncode} during the run:\n{child.tail()}"
                return False
        return True

    def run(self) -> dict[str, dict[str, Row]]:
        args = self.args
        results: dict[str, dict[str, Row]] = {}
        for scenario in args.scenarios:
            rows = results[scenario.name] = {}
            for target in scenario.targets:
                if target not in args.targets:
                    continue
                rows[target] = row = Row(target)
                row.failure = self.down.get(target) or self.preflight(scenario, target)
                if row.failure:
                    log(f"!! {scenario.name} via {target}: {row.failure}")
        cases = [(s, t) for s in args.scenarios for t, row in results[s.name].items() if not row.failure]
        total = len(cases) * (args.rounds * args.duration + args.warmup)
        log(f"{len(cases)} cases, {args.rounds} rounds of {args.duration:g}s (+{args.warmup:g}s warm-up): "
            f"about {total / 60:.1f} min")
        if args.warmup:
            for scenario, target in cases:
                with contextlib.suppress(RuntimeError, wrk.WrkOutputError):
                    self.measure(scenario, target, args.warmup)
        for round_no in range(1, args.rounds + 1):
            self.quiet_before.append(wait_quiet((args.proxy_cpu, args.load_cpu), args.quiet_wait))
            for scenario, target in cases:
                row = results[scenario.name][target]
                if row.failure or not self.alive(target):
                    row.failure = row.failure or self.down[target]
                    continue
                try:
                    sample = self.measure(scenario, target, args.duration)
                except (RuntimeError, wrk.WrkOutputError, subprocess.TimeoutExpired) as exc:
                    row.failure = str(exc)
                    log(f"!! round {round_no} {scenario.name} via {target}: {exc}")
                    continue
                row.samples.append(sample)
                r = sample.wrk
                log(f"round {round_no} {scenario.name:<12} {target:<16} {r.rps:>9,.0f} req/s  p50 "
                    f"{report.fmt_time(r.p50_us):>7}  p99 {report.fmt_time(r.p99_us):>7}  "
                    f"{sample.cpu_us_per_req:5.0f} µs CPU/req  errors {r.errors}")
                if not self.alive(target):
                    row.failure = self.down[target]
        return results


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
        lines += [f"### {scenario.name}: {describe(scenario)}", "", *report.table(rows), ""]
        if scenario.gated:
            outcome = report.verdict(rows)
            if outcome:
                ok, text = outcome
                verdict = f"**{'PASS' if ok else 'FAIL'}** ({scenario.name}): {text}."
                verdicts.append(verdict)
                lines += [f"Target (issue 2: ≥ 60% of nginx's req/s on one core, p99 ≤ 2{report.X} nginx's): {verdict}",
                          ""]
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
    verdicts: list[str] = []
    for section in dict.fromkeys(s.section for s in args.scenarios):
        body, found = section_markdown(section, results, env, bench)
        verdicts += found
        if args.no_write:
            print(body)
        else:
            report.write_section(args.results, section, body, PREAMBLE)
    if not args.no_write:
        log(f"bench: wrote {args.results}")
    for verdict in verdicts:
        log(verdict)
    log(f"bench: done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
