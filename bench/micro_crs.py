"""CRS inspection CPU per request: Bastion's engine against libmodsecurity (ModSecurity v3), same rules.

    python bench/micro_crs.py [paranoia]
    valgrind --tool=callgrind --toggle-collect=functools_reduce \
        python bench/micro_crs.py --one ENGINE CASE N [paranoia]

Three requests, as in issue #14: a clean GET with five query parameters, a clean ~1 KB JSON POST
(bench/payload_1k.json) and an attack (a SQL injection in a JSON field). Both engines get the same CRS
directory and setup; Bastion's figure includes building the request variables and parsing the JSON (the
input stage parses it anyway). CPU time (process_time) per request, median of 7 rounds of 100 in which the two
engines' batches alternate; the machine is shared, so figures move by 20-30% from run to run, ratios less.

`--one` runs one engine (`modsec` or `bastion`) on one case (`get`, `post`, `attack`) N times inside one
`functools.reduce` call after a warm-up: under callgrind with `--toggle-collect=functools_reduce` the
instructions counted are those N requests only (setup, rule compilation and interpreter start excluded), so
instructions per request = total / N, repeatable on a loaded machine (the A/B figure in bench/RESULTS.md).
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.crs_reference import Bastion, ModSecurity, Request

HEADERS = (("Host", "api.example"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"),
           ("Accept", "application/json"), ("Accept-Language", "en-GB,en;q=0.8"),
           ("Cookie", "session=8f2a61c0d4b94e3f; theme=dark"))
PAYLOAD = (Path(__file__).resolve().parent / "payload_1k.json").read_bytes()
ATTACK = orjson.dumps({"user": {"name": "Ann", "bio": "1' UNION SELECT password FROM users--"}})


def _json(body: bytes) -> Request:
    return Request("POST", "/api/orders", (*HEADERS, ("Content-Type", "application/json"),
                                           ("Content-Length", str(len(body)))), body)


CASES = {
    "clean GET, 5 params": Request("GET", "/api/items?page=2&size=20&sort=name&lang=en&q=red+shoes", HEADERS),
    "clean 1 KB JSON POST": _json(PAYLOAD),
    "attack (SQLi in JSON)": _json(ATTACK),
}


def batch(run, req: Request, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        run(req)
    return (time.process_time() - start) / n


def interleaved(runs: list, req: Request, n: int, rounds: int = 7) -> list[float]:
    """Median CPU per request of each engine; their batches alternate, so load from other work on a shared
    machine falls on both alike."""
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            samples[i].append(batch(run, req, n))
    return [statistics.median(s) for s in samples]


SHORT = dict(zip(("get", "post", "attack"), CASES, strict=True))


def one(engine: str, case: str, n: int, paranoia: int) -> None:
    """N requests of one case on one engine inside a single `functools.reduce` call (see the module doc)."""
    run = (ModSecurity if engine == "modsec" else Bastion)(paranoia).run
    req = CASES[SHORT[case]]
    for _ in range(20):  # warm-up: caches, first-call costs
        run(req)
    functools.reduce(lambda _, r: run(r), [req] * n, None)
    print(f"{engine} {case}: {n} requests")


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        one(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 1)
        return
    paranoia = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    modsec, ours = ModSecurity(paranoia), Bastion(paranoia)
    print(f"paranoia {paranoia}\n\n| request | ModSecurity v3 | Bastion | ratio |\n|---|---:|---:|---:|")
    for name, req in CASES.items():
        assert modsec.run(req)[0] == ours.run(req)[0], name  # same decision before timing anything
        ref, bas = interleaved([modsec.run, ours.run], req, 100)
        print(f"| {name} | {ref * 1e6:.0f} µs | {bas * 1e6:.0f} µs | {bas / ref:.2f}x |")


if __name__ == "__main__":
    main()
