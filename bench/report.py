"""Turn rounds of measurements into medians, verdicts and the markdown of bench/RESULTS.md.

RESULTS.md is shared by every section of the benchmark: a run rewrites only the text between its section's
markers (`<!-- bench:core -->` ... `<!-- /bench:core -->`) and keeps everything else.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.wrk import WrkResult

X = "\u00d7"  # the multiplication sign, as in "0.62 times nginx"
MIN_RATIO = 0.60  # Bastion's req/s ÷ nginx's, one core (issue 2, section 6)
MAX_P99_FACTOR = 2.0  # Bastion's p99 ÷ nginx's


@dataclass(frozen=True, slots=True)
class Sample:
    """One wrk run against one target, with the target's own CPU time over the run."""

    wrk: WrkResult
    proxy_cpu_s: float  # the target's process tree: utime + stime
    proxy_core_busy: float  # fraction of the proxy's CPU busy (all processes, irq, softirq)
    load_core_busy: float  # fraction of the load CPU busy (wrk, upstream, their softirq)
    on_proxy_core: bool = True  # False for direct-upstream, which runs on the load CPU

    @property
    def cpu_us_per_req(self) -> float:
        return self.proxy_cpu_s / self.wrk.requests * 1e6 if self.wrk.requests else float("nan")

    @property
    def target_busy(self) -> float:
        """Share of the proxy's core used by the target itself (nan when the target runs on the load core)."""
        return self.proxy_cpu_s / self.wrk.seconds if self.on_proxy_core and self.wrk.seconds else float("nan")

    @property
    def other_busy(self) -> float:
        """Share of the proxy's core used by anything else: kernel softirq work, other processes."""
        own = self.target_busy if self.on_proxy_core else 0.0
        return max(0.0, self.proxy_core_busy - own)

    @property
    def core_us_per_req(self) -> float:
        """Busy time of the proxy's whole core per request: includes the loopback softirq work."""
        if not self.on_proxy_core or not self.wrk.requests:
            return float("nan")
        return self.proxy_core_busy * self.wrk.seconds / self.wrk.requests * 1e6


@dataclass
class Row:
    """Every round of one (scenario, target), or why it could not be measured."""

    target: str
    samples: list[Sample] = field(default_factory=list)
    failure: str | None = None

    def median(self, attr: str) -> float:
        values = [getattr(s, attr) if hasattr(s, attr) else getattr(s.wrk, attr) for s in self.samples]
        return statistics.median(values) if values else float("nan")

    @property
    def errors(self) -> str:
        socket_ = sum(s.wrk.socket_errors for s in self.samples)
        timeouts = sum(s.wrk.timeouts for s in self.samples)
        non2xx = sum(s.wrk.non_2xx for s in self.samples)
        if not socket_ and not non2xx:
            return "0"
        parts = []
        if socket_:
            parts.append(f"{socket_} socket ({timeouts} timeouts)")
        if non2xx:
            parts.append(f"{non2xx} non-2xx")
        return ", ".join(parts)


def fmt_time(us: float) -> str:
    if us != us:  # nan
        return "-"
    return f"{us:.0f}µs" if us < 1000 else f"{us / 1000:.1f}ms" if us < 1e6 else f"{us / 1e6:.2f}s"


def fmt_int(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"


def fmt_num(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"


def fmt_pct(value: float) -> str:
    return "-" if value != value else f"{value:.0%}"


def verdict(rows: dict[str, Row]) -> tuple[bool, str] | None:
    """PASS/FAIL of the issue's target for a gated scenario, or None when nginx or Bastion has no figure."""
    nginx, bastion = rows.get("nginx"), rows.get("bastion")
    if not nginx or not bastion or not nginx.samples:
        return None
    if not bastion.samples:
        return False, f"Bastion could not be measured ({bastion.failure})"
    ratio = bastion.median("rps") / nginx.median("rps")
    p99 = bastion.median("p99_us") / nginx.median("p99_us")
    clean = bastion.errors == "0"
    ok = ratio >= MIN_RATIO and p99 <= MAX_P99_FACTOR and clean
    text = (f"req/s {ratio:.2f}{X} nginx (target ≥ {MIN_RATIO:.2f}): {'pass' if ratio >= MIN_RATIO else 'FAIL'}; "
            f"p99 {p99:.2f}{X} nginx (target ≤ {MAX_P99_FACTOR:g}{X}): "
            f"{'pass' if p99 <= MAX_P99_FACTOR else 'FAIL'}"
            + ("" if clean else f"; errors under load: {bastion.errors}"))
    cpu = bastion.median("cpu_us_per_req") / nginx.median("cpu_us_per_req")
    text += (f". Noise-free cross-check: Bastion uses {cpu:.1f}{X} nginx's CPU time per request, so on one "
             f"saturated core it serves at most {1 / cpu:.2f}{X} nginx's req/s")
    defaults = rows.get("nginx-defaults")
    if defaults and defaults.samples:
        text += (f" (against nginx with its default keepalive_requests: req/s "
                 f"{bastion.median('rps') / defaults.median('rps'):.2f}{X}, p99 "
                 f"{bastion.median('p99_us') / defaults.median('p99_us'):.2f}{X})")
    return ok, text


def table(rows: dict[str, Row], reference: str = "nginx", label: str = "nginx",
          plain: Row | None = None) -> list[str]:
    """The markdown table of one scenario: one line per target, medians over the rounds.

    `reference` names the row the ratio column divides by (its header: x`label`); `plain` is Bastion's own
    plain-route row, for the xbastion-plain column (what the scenario's control costs).
    """
    ref = rows.get(reference)
    ref_rps = ref.median("rps") if ref and ref.samples else float("nan")
    plain_rps = plain.median("rps") if plain and plain.samples else float("nan")
    lines = [
        f"| target | req/s | {X}{label} | {X}bastion-plain | p50 | p99 | CPU µs/req (process) | CPU µs/req (core) "
        "| proxy core busy: target + other | load core busy | errors | req/s per round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, row in rows.items():
        if not row.samples:
            lines.append(f"| {name} | failed (see below) | | | | | | | | | | |")
            continue
        rps = row.median("rps")
        ratio = "-" if ref_rps != ref_rps else f"{rps / ref_rps:.2f}"
        to_plain = "-" if plain_rps != plain_rps or not name.startswith("bastion") else f"{rps / plain_rps:.2f}"
        rounds = " / ".join(f"{s.wrk.rps:,.0f}" for s in row.samples)
        lines.append(
            f"| {name} | {fmt_int(rps)} | {ratio} | {to_plain} | {fmt_time(row.median('p50_us'))} "
            f"| {fmt_time(row.median('p99_us'))} | {fmt_num(row.median('cpu_us_per_req'))} "
            f"| {fmt_num(row.median('core_us_per_req'))} "
            f"| {fmt_pct(row.median('target_busy'))} + {fmt_pct(row.median('other_busy'))} "
            f"| {fmt_pct(row.median('load_core_busy'))} | {row.errors} | {rounds} |"
        )
    return lines


def background(rows: list[Row]) -> tuple[float, float]:
    """(median, max) share of the proxy's core used by others while direct-upstream ran (nothing of ours on it)."""
    values = [s.other_busy for row in rows if row.target == "direct-upstream" for s in row.samples]
    return (statistics.median(values), max(values)) if values else (float("nan"), float("nan"))


def replace_section(document: str, section: str, body: str, top: bool = False) -> str:
    """Put `body` between the section's markers, adding the section when it is not there yet: at the end, or
    with `top` before the first section."""
    start, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(document):
        return pattern.sub(lambda _: block, document, count=1)
    first = re.search(r"^<!-- bench:", document, re.M)  # a marker on its own line, not one quoted in prose
    if top and first:
        return document[:first.start()] + block + "\n\n" + document[first.start():]
    return document.rstrip() + ("\n\n" if document.strip() else "") + block + "\n"


def write_section(path: Path, section: str, body: str, preamble: str, top: bool = False) -> None:
    """Rewrite one section of RESULTS.md, creating the file with `preamble` when it does not exist."""
    document = path.read_text() if path.exists() else preamble
    path.write_text(replace_section(document, section, body, top).rstrip() + "\n")
