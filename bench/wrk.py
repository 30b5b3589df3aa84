"""Run `wrk` and read its report: requests/s, latency percentiles, socket errors, non-2xx responses."""

from __future__ import annotations

import re
from dataclasses import dataclass

# wrk prints latencies with these units (src/units.c: time_units_us)
_TIME_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run. Latencies are in microseconds."""

    requests: int
    seconds: float
    rps: float
    p50_us: float
    p99_us: float
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    non_2xx: int = 0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx


class WrkOutputError(ValueError):
    """wrk's output did not contain a complete report (it failed, or its format changed)."""


def parse_time_us(text: str) -> float:
    """`'1.23ms'` -> 1230.0"""
    match = re.fullmatch(_TIME, text.strip())
    if not match:
        raise WrkOutputError(f"not a wrk time: {text!r}")
    return float(match.group(1)) * _TIME_UNITS_US[match.group(2)]


def parse(output: str) -> WrkResult:
    """Parse the text wrk prints with `--latency`."""
    total = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", output, re.M)
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)", output, re.M)
    p50 = re.search(rf"^\s*50(?:\.000)?%\s+{_TIME}", output, re.M)
    p99 = re.search(rf"^\s*99(?:\.000)?%\s+{_TIME}", output, re.M)
    if not (total and rps and p50 and p99):
        raise WrkOutputError("incomplete wrk report (was --latency given?):\n" + output[-2000:])
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    connect, read, write, timeout = (int(x) for x in sock.groups()) if sock else (0, 0, 0, 0)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=parse_time_us(total.group(2) + total.group(3)) / 1e6,
        rps=float(rps.group(1)),
        p50_us=parse_time_us(p50.group(1) + p50.group(2)),
        p99_us=parse_time_us(p99.group(1) + p99.group(2)),
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeouts=timeout,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
    )


def command(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    script: str | None = None,
    headers: tuple[str, ...] = (),
    timeout: float = 5.0,
) -> list[str]:
    """The wrk argument list for one keep-alive run with the latency distribution."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", f"--timeout={timeout:g}s", "--latency"]
    for header in headers:
        args += ["-H", header]
    if script:
        args += ["-s", script]
    args.append(url)
    return args
