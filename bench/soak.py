"""Soak: a gateway under a moderate, realistic load for minutes, its memory, descriptors and latency sampled.

    python bench/soak.py                            # 30 minutes at 200 req/s, a sample every 30 s
    python bench/soak.py --minutes 5 --rate 150     # a short run; writes the `soak` section of RESULTS.md

One Bastion process (`bastion serve`) in front of the demo echo upstream, both on 127.0.0.1. The mix, sent by
an asyncio client over keep-alive connections at a fixed rate (open loop: latency counts from the moment a
request was due, so a stalled gateway shows as latency, not as a lower rate):
- 55% GET with a JWT from a pool of 50 (the verified-token cache), 5% GET with a never-seen JWT (fresh `sub`,
  `jti`: the cache and every per-subject table churn), each from its own X-Forwarded-For address. The
  never-seen tokens come exactly one request in 20, the rest of the mix at random: drawn at random too
  (`--random-fresh`), the count of them in the last 5 minutes (the tokens the cache holds) wanders with the
  draw (2,904 to 3,073 over 30 minutes with the seed used), and RSS keeps the highest point it reached;
- 20% POST of the 1 KB order validated against its OpenAPI operation, with injection inspection;
- 5% POST with an injection payload (400 from inspection), 15% from one noisy client over its rate limit (429);
- every request audited to a file sink that rotates every MiB.
Every table should reach its steady state within the default 5-minute warm-up: verified tokens live 5 minutes in
the cache, rate-limit windows a minute, and the usage-anomaly warm-up is shortened to 2 minutes (it sets how long
a one-time subject's baseline is kept; with the default 10 minutes, use `--warmup 900`). The run does not take
that on trust: the gateway runs under `bench/soakdiag.py`, whose sampler thread finds every `BoundedCache` of the
running config once (a walk from the Runtime, 0.1 s) and records their sizes, Python's allocated blocks and
malloc's bytes in use (`mallinfo2`) every third of an interval: no collection, no object census (`--diagnose`
adds those, and `--trace` tracemalloc, to attribute growth; neither is for the verdict run).
Every `--interval` seconds: the gateway's RSS and open descriptors (/proc), those figures, the latency
percentiles and the answers of the requests finished in the interval. The verdict is PASS when, after the
warm-up, the least-squares slope of RSS projected over the rest of the run stays within noise (3 residual
standard deviations, at least 1 MiB) and the descriptors do not grow. The warm-up is `--warmup`, extended to
the moment the last bounded table reached its steady size; a table still filling after half the run is a FAIL.
`--leak N` makes the gateway keep N bytes a second, to see the verdict fail.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/soak.py`: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs, report

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
ISSUER = "https://idp.soak.invalid"
SECRET = b"soak-secret-soak-secret-32-bytes"
PAYLOAD = (REPO / "bench" / "payload_1k.json").read_bytes()
# the same valid order with a SQL injection in a string the schema allows: refused by inspection (400)
_ORDER = json.loads(PAYLOAD)
_ORDER["customer"]["id"] = "1' UNION SELECT password FROM users--"
INJECTION = json.dumps(_ORDER).encode()
NOISY = "203.0.113.7"

CONFIG = """\
version: 1
gateway:
  listeners: [{{address: 127.0.0.1, port: {port}}}]
  admin: {{enabled: false}}
  trusted_proxies: [127.0.0.1/32]
  audit:
    sinks: [{{type: file, path: "{tmp}/audit.jsonl", max_bytes: 1MiB, backups: 2}}]
    detections: {{usage_anomaly: {{warmup: 2m}}}}
classes:
  partner:
    identity: {{required: true, methods: [jwt]}}
    input: {{contract: "off", inspection: "off"}}
    traffic: {{rate_limits: [{{name: per-client, algorithm: sliding_window, limit: 10, window: 1s, key: client_ip}}]}}
apis:
  - name: soak
    owner: perf@example.com
    class: partner
    upstream: http://127.0.0.1:{upstream}
    routes:
      - {{name: items, path: /items, methods: [GET]}}
  - name: orders
    owner: perf@example.com
    class: partner
    upstream: http://127.0.0.1:{upstream}
    openapi: {openapi}
    routes:
      - {{operation: postOrderInspected, policy: {{input: {{contract: enforce, inspection: block}}}}}}
providers:
  jwt:
    - {{name: soak, issuer: "{issuer}", audiences: ["api://soak"], algorithms: [HS256], jwks_file: "{tmp}/jwks.json"}}
"""


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_HEADER = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": "soak"}).encode())


def token(subject: str, now: int) -> bytes:
    claims = {"iss": ISSUER, "aud": "api://soak", "sub": subject, "jti": subject, "iat": now, "exp": now + 7200,
              "client_id": "soak"}
    signing = _HEADER + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
    return signing + b"." + _b64(hmac.new(SECRET, signing, hashlib.sha256).digest())


@dataclass
class Mix:
    """Builds the next request of the realistic mix."""

    now: int = field(default_factory=lambda: int(time.time()))
    pool: list[bytes] = field(default_factory=list)
    fresh: int = 0
    fresh_share: float = 0.05
    even: bool = True  # never-seen tokens exactly every 1/fresh_share requests, not at random
    _due: float = 0.0

    def __post_init__(self) -> None:
        self.pool = [token(f"regular-{i}", self.now) for i in range(50)]

    def next(self, rng: random.Random) -> bytes:
        roll = rng.random()
        address = f"10.0.{rng.randrange(8)}.{rng.randrange(1, 251)}"  # 2,000 regular client addresses
        if self.even:  # the share of fresh tokens, evenly spread: the token tables hold a constant count
            self._due += self.fresh_share
            if self._due >= 1:
                self._due -= 1
                roll = 0.15
            else:  # the rest of the mix in its proportions: [0, 1) onto everything but the fresh slot
                roll *= 1 - self.fresh_share
                roll += self.fresh_share if roll >= 0.15 else 0.0
        if roll < 0.15:
            return self._get(self.pool[0], NOISY)
        roll -= self.fresh_share
        if roll < 0.15:  # a never-seen token from a never-seen address
            self.fresh += 1
            return self._get(token(f"fresh-{self.fresh}", self.now),
                             f"10.{1 + self.fresh // 65536 % 250}.{self.fresh // 256 % 256}.{self.fresh % 256}")
        if roll < 0.35:
            return self._post(rng.choice(self.pool), address, PAYLOAD)
        if roll < 0.40:
            return self._post(rng.choice(self.pool), address, INJECTION)
        return self._get(rng.choice(self.pool), address)

    @staticmethod
    def _get(bearer: bytes, address: str) -> bytes:
        return (b"GET /items HTTP/1.1\r\nHost: soak\r\nX-Forwarded-For: %b\r\nAuthorization: Bearer %b\r\n\r\n"
                % (address.encode(), bearer))

    @staticmethod
    def _post(bearer: bytes, address: str, body: bytes) -> bytes:
        return (b"POST /contract/post-inspected HTTP/1.1\r\nHost: soak\r\nX-Forwarded-For: %b\r\n"
                b"Authorization: Bearer %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                % (address.encode(), bearer, len(body), body))


@dataclass
class Interval:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def connection(port: int, queue: asyncio.Queue[tuple[float, bytes]], interval: list[Interval]) -> None:
    loop = asyncio.get_running_loop()
    reader = writer = None
    while True:
        due, raw = await queue.get()
        try:
            if writer is None or writer.is_closing():
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            assert reader is not None
            status = await asyncio.wait_for(_read_response(reader), 30)
            current = interval[0]
            current.latencies.append(loop.time() - due)
            key = str(status) if 400 <= status < 500 else f"{status // 100}xx"
            current.statuses[key] = current.statuses.get(key, 0) + 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            interval[0].errors += 1
            if writer is not None:
                writer.close()
            writer = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_sample(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Sample:
    at: float  # seconds since the start
    rss: int
    fds: int
    requests: int
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    errors: int
    py_blocks: int = 0  # objects (blocks) Python's allocator holds, from the gateway's sampler
    malloc_used: int = 0  # bytes malloc has handed out and not had back (large objects, C extensions)
    tables: dict[str, int] = field(default_factory=dict)  # entries of every bounded table
    table_bytes: dict[str, int] = field(default_factory=dict)  # the bytes of their hash tables


def _inside(path: Path | None) -> dict[str, Any]:
    """The gateway's own last sample (bench/soakdiag.py), or nothing."""
    if path is None or not path.exists():
        return {}
    lines = path.read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


async def drive(port: int, pid: int, seconds: float, rate: float, every: float, connections: int,
                fresh_share: float = 0.05, inside: Path | None = None, even: bool = True) -> list[Sample]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    interval = [Interval()]
    workers = [asyncio.create_task(connection(port, queue, interval)) for _ in range(connections)]
    mix, rng = Mix(fresh_share=fresh_share, even=even), random.Random(18)
    samples: list[Sample] = []
    start = loop.time()
    next_sample = start + every
    sent = 0
    try:
        while (now := loop.time()) < start + seconds:
            due = start + sent / rate
            if due > now:
                await asyncio.sleep(min(due - now, max(0.0, next_sample - now)))
            if loop.time() >= next_sample:
                done, interval[0] = interval[0], Interval()
                rss, fds = _proc_sample(pid)
                own = _inside(inside)
                samples.append(Sample(round(loop.time() - start), rss, fds, len(done.latencies),
                                      _pct(done.latencies, 0.5) * 1000, _pct(done.latencies, 0.99) * 1000,
                                      done.statuses, done.errors, own.get("py_blocks", 0),
                                      own.get("malloc", {}).get("in_use", 0), own.get("tables", {}),
                                      own.get("table_bytes", {})))
                s = samples[-1]
                print(f"{s.at:6.0f} s  RSS {s.rss / 2**20:6.1f} MiB  fds {s.fds:3d}  {s.requests / every:6.0f} req/s  "
                      f"p50 {s.p50_ms:6.2f} ms  p99 {s.p99_ms:7.2f} ms  {s.statuses} errors {s.errors}  "
                      f"py blocks {s.py_blocks / 1000:.1f}k malloc {s.malloc_used / 2**20:.1f} MiB "
                      f"tables {sum(s.tables.values())}", flush=True)
                next_sample += every
                continue
            while sent < (loop.time() - start) * rate:
                queue.put_nowait((start + sent / rate, mix.next(rng)))
                sent += 1
    finally:
        for worker in workers:
            worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*workers, return_exceptions=True)
    return samples


def settled(samples: list[Sample]) -> dict[str, float]:
    """When each bounded table reached its steady size: the first sample from which it never again grows more
    than 5% past the largest size it had shown by then, give or take 64 entries or 0.5% of its maximum (a table
    of a few dozen entries doubles for a moment when they are all renewed together). A table still growing at
    the end of the run settles only at its last sample."""
    out: dict[str, float] = {}
    for name in sorted({n for s in samples for n in s.tables}):
        cap = int(name.rpartition("(max ")[2].rstrip(")") or 0) if "(max " in name else 0
        out[name] = _settled([s.tables.get(name, 0) for s in samples], samples, max(64, cap // 200))
        # and its hash tables: they grow once more, to about 3 slots an entry, after the entries have settled
        sized = [s.table_bytes.get(name, 0) for s in samples]
        if any(sized):
            out[name] = max(out[name], _settled(sized, samples, 4096))
    return out


def _settled(sizes: list[int], samples: list[Sample], slack: int) -> float:
    top = 0
    for i, s in enumerate(samples):
        top = max(top, sizes[i])
        if max(sizes[i:]) <= top * 1.05 + slack:
            return s.at
    return samples[-1].at


def _trend(xs: list[float], ys: list[float], floor: float) -> tuple[float, float, float]:
    """Least-squares slope of `ys` over `xs`, the growth it projects over the span, and the noise band: three
    standard deviations of the residuals, at least `floor`."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    residuals = [y - (mean_y + slope * (x - mean_x)) for x, y in zip(xs, ys, strict=True)]
    return slope, slope * (xs[-1] - xs[0]), max(floor, 3 * statistics.pstdev(residuals))


def verdict(samples: list[Sample], warmup: float) -> tuple[bool, str]:
    """PASS when, after the warm-up, RSS has no slope beyond noise and descriptors do not grow.

    The warm-up lasts `warmup` seconds, or longer when a bounded table of the gateway is still filling: it ends
    when the last one has reached its steady size (`settled`). A table still filling after half the run is a
    FAIL: over that run it cannot be told from a leak."""
    tables = settled(samples)
    filling = max(tables.items(), key=lambda item: item[1], default=("", 0.0))
    start = max(warmup, filling[1])
    if samples and filling[1] > max(warmup, samples[-1].at / 2):
        return False, (f"table {filling[0]} was still filling at {filling[1]:.0f} s, past half the run: "
                       "run longer, or size it to fill sooner")
    kept = [s for s in samples if s.at > start]
    if len(kept) < 3:
        return False, f"too few samples after the {start:.0f} s warm-up ({len(kept)}): run longer"
    xs = [s.at for s in kept]
    slope, growth, noise = _trend(xs, [s.rss / 2**20 for s in kept], 1.0)
    # descriptors: the upstream pool opens more during a latency spike or a busy machine and closes them after,
    # so they are judged like RSS: a trend beyond their own noise (at least 3), not one sample against another
    _, fds_growth, fds_noise = _trend(xs, [float(s.fds) for s in kept], 3.0)
    fds_grew = fds_growth > fds_noise
    ok = abs(growth) <= noise and not fds_grew
    why = (f"warm-up {start:.0f} s" + (f" (the last table to settle: {filling[0]}, at {filling[1]:.0f} s)"
                                      if filling[0] else "")
           + f"; RSS slope after it {slope * 60:+.3f} MiB/min, {growth:+.2f} MiB over {xs[-1] - xs[0]:.0f} s "
           f"(noise band ±{noise:.2f} MiB); descriptors {kept[0].fds} -> {kept[-1].fds}, trend {fds_growth:+.1f} "
           f"(noise band ±{fds_noise:.1f})")
    if kept[0].py_blocks:
        why += (f"; Python objects {kept[0].py_blocks / 1000:.1f}k -> {kept[-1].py_blocks / 1000:.1f}k, "
                f"malloc in use {kept[0].malloc_used / 2**20:.1f} -> {kept[-1].malloc_used / 2**20:.1f} MiB")
    return ok, why


def start_of(samples: list[Sample]) -> dt.datetime:
    """When a run that ends now started."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=samples[-1].at if samples else 0)


def markdown(samples: list[Sample], ok: bool, why: str, args: argparse.Namespace) -> str:
    lines = [
        f"## Soak: {args.minutes:g} minutes at {args.rate:g} req/s — **{'PASS' if ok else 'FAIL'}**",
        "",
        f"Run started {getattr(args, 'started', None) or start_of(samples):%Y-%m-%d %H:%M} UTC by "
        f"`python bench/soak.py --minutes {args.minutes:g} --rate {args.rate:g}"
        f"{' --random-fresh' if args.random_fresh else ''}` (one gateway process, the demo upstream, "
        f"{args.connections} keep-alive client connections; the mix is described in bench/soak.py). "
        f"Verdict: {why}. "
        "Latency is measured from the moment each request was due, on whatever else the machine runs: its "
        "percentiles are noisy when the machine is shared, RSS and descriptors are not.",
        "",
    ]
    tables = settled(samples)
    if tables:
        lines += ["Bounded tables of the gateway (entries at the end of the run, largest seen, and when each "
                  "reached its steady size):", ""]
        lines += [f"- `{name}`: {samples[-1].tables.get(name, 0):,} at the end, at most "
                  f"{max(s.tables.get(name, 0) for s in samples):,}, settled at {at:.0f} s"
                  for name, at in sorted(tables.items(), key=lambda item: item[1])]
        lines.append("")
    lines += [
        "| t (s) | RSS (MiB) | Python objects (k) | malloc in use (MiB) | table entries | fds | req/s | p50 (ms) "
        "| p99 (ms) | answers | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in samples:
        answers = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items()))
        lines.append(f"| {s.at:.0f} | {s.rss / 2**20:.1f} | {s.py_blocks / 1000:.1f} | {s.malloc_used / 2**20:.1f} "
                     f"| {sum(s.tables.values()):,} | {s.fds} | {s.requests / args.interval:.0f} | "
                     f"{s.p50_ms:.2f} | {s.p99_ms:.2f} | {answers} | {s.errors} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/soak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds left out of the verdict")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--fresh-share", type=float, default=0.05,
                        help="share of requests with a never-seen token and address (taken from the pooled GETs)")
    parser.add_argument("--random-fresh", action="store_true",
                        help="never-seen tokens at random (5%% of draws) rather than exactly every 1/share requests: "
                             "the count in the token tables then wanders with the draw, and RSS keeps its highest point")
    parser.add_argument("--diagnose", metavar="OUT.jsonl",
                        help="run the gateway under bench/soakdiag.py, sampling its tables and heaps into OUT.jsonl")
    parser.add_argument("--trace", action="store_true", help="with --diagnose: attribute growth with tracemalloc")
    parser.add_argument("--leak", type=int, default=0, metavar="BYTES_PER_S",
                        help="make the gateway leak this many bytes a second (to show that the verdict fails)")
    parser.add_argument("--save", metavar="SAMPLES.json", help="also write the samples, to analyse them again")
    parser.add_argument("--replay", metavar="SAMPLES.json",
                        help="no run: the verdict (and the section, unless --no-write) from saved samples")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.replay:  # the verdict and the section again, from the samples a run saved
        saved = Path(args.replay)
        samples = [Sample(**sample) for sample in json.loads(saved.read_text())]
        # saved at the end of the run: it started that long before
        args.started = dt.datetime.fromtimestamp(saved.stat().st_mtime - samples[-1].at, dt.UTC)
        return _finish(samples, args)
    with tempfile.TemporaryDirectory(prefix="bastion-soak-") as folder, procs.Processes(Path(folder)) as children:
        tmp = Path(folder)
        key = {"kty": "oct", "kid": "soak", "alg": "HS256", "k": _b64(SECRET).decode()}
        (tmp / "jwks.json").write_text(json.dumps({"keys": [key]}))
        upstream_port, port = free_port(), free_port()
        (tmp / "bastion.yaml").write_text(CONFIG.format(port=port, upstream=upstream_port, tmp=tmp, issuer=ISSUER,
                                                        openapi=REPO / "bench" / "bench-openapi.yaml"))
        upstream = children.start("upstream", [sys.executable, "-m", "bastion.demo.upstream", str(upstream_port)])
        procs.wait_port(upstream, upstream_port)
        # the gateway runs under bench/soakdiag.py: its sampler thread records the bounded tables' sizes and the
        # allocators' figures (light: no collection, no census), or with --diagnose everything, for attribution
        inside = tmp / "inside.jsonl"
        if args.diagnose:
            sampler = [str(Path(args.diagnose).resolve()), str(args.interval), *(["--trace"] if args.trace else [])]
        else:
            sampler = [str(inside), str(max(1.0, args.interval / 3)), "--light",
                       *(["--leak", str(args.leak)] if args.leak else [])]
        command = ["-m", "bench.soakdiag", *sampler, "--", "serve", "-c", str(tmp / "bastion.yaml")]
        gateway = children.start("bastion", [sys.executable, *command], env={**os.environ, "PYTHONPATH": str(REPO)})
        procs.wait_port(gateway, port, timeout=180 if args.diagnose else 30)
        samples = asyncio.run(drive(port, gateway.pid, args.minutes * 60, args.rate, args.interval,
                                    args.connections, args.fresh_share, None if args.diagnose else inside,
                                    not args.random_fresh))
        if inside.exists():
            walks = [line for line in inside.read_text().splitlines() if '"walk"' in line]
            print("gateway sampler:", *(json.loads(line)["walk"] for line in walks))
    if args.save:
        Path(args.save).write_text(json.dumps([vars(s) for s in samples]))
    return _finish(samples, args)


def _finish(samples: list[Sample], args: argparse.Namespace) -> int:
    ok, why = verdict(samples, args.warmup)
    print(("PASS: " if ok else "FAIL: ") + why)
    if not args.no_write:
        report.write_section(RESULTS, "soak", markdown(samples, ok, why, args), RESULTS.read_text().split("\n")[0])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
