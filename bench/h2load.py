"""Run `h2load` (Debian package nghttp2-client) and read its report into the same shape as a wrk run.

h2load prints no latency percentiles, so p50 and p99 come from its per-request log (`--log-file`: start time,
status, duration in µs, tab-separated); requests/s and failures from its summary.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.wrk import WrkOutputError, WrkResult


def command(url: str, *, duration: float, clients: int, streams: int, log_file: Path,
            headers: tuple[str, ...] = ()) -> list[str]:
    """HTTP/2 with prior knowledge on a cleartext URL (h2c), `clients` connections of `streams` streams each."""
    argv = ["h2load", "-t1", f"-c{clients}", f"-m{streams}", f"-D{duration:g}", f"--log-file={log_file}"]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    return argv


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def parse(output: str, log_text: str) -> WrkResult:
    """The summary h2load prints, and the per-request log it wrote."""
    finished = re.search(r"finished in ([0-9.]+)(us|ms|s), ([0-9.]+) req/s", output)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", output)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if not (finished and counts and codes):
        raise WrkOutputError("incomplete h2load report:\n" + output[-2000:])
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[finished.group(2)]
    durations = sorted(float(line.split("\t")[2]) for line in log_text.splitlines() if line.count("\t") >= 2)
    done, failed, errored, timeouts = (int(counts.group(i)) for i in (3, 5, 6, 7))
    return WrkResult(
        requests=done, seconds=float(finished.group(1)) * scale, rps=float(finished.group(3)),
        p50_us=percentile(durations, 0.50), p99_us=percentile(durations, 0.99),
        read_errors=failed - errored - timeouts if failed > errored + timeouts else 0, write_errors=errored,
        timeouts=timeouts, non_2xx=done - int(codes.group(1)) if done >= int(codes.group(1)) else 0,
    )
