"""Per-request cost of the input stages on a validated 1 KB JSON POST (a micro-benchmark, not a test).

    python bench/micro_input.py

Builds the stages for `createOrder` of tests/data/openapi/shop.yaml, as compile does, and runs head + body
stages on the same ~1 KB body many times, for several policies. The figures are per request, on one core.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from bastion.context import Continue, RequestContext
from bastion.openapi import load_openapi
from bastion.stages.base import RouteInfo
from bastion.stages.input import InputPolicy, build_body, build_head, prepare
from bastion.stages.input.jsonbody import JsonLimits, parse

SPEC = Path(__file__).resolve().parent.parent / "tests" / "data" / "openapi" / "shop.yaml"

BODY = orjson.dumps({
    "items": [{"productId": i + 1, "quantity": (i % 9) + 1} for i in range(24)],
    "shipping": {"street": "221B Baker Street", "city": "London", "zip": "NW1 6XE", "country": "GB"},
    "note": "Please leave the parcel with the neighbour at number 223 if nobody answers; thanks a lot! "
            "The side gate is open on weekdays between 9 and 17, ring twice.",
})


def _run(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("a stage awaited something")


def measure(policy: InputPolicy, n: int) -> float:
    doc = load_openapi(SPEC)
    op = doc.operation("createOrder")
    assert op is not None
    route = RouteInfo("shop", "createOrder", "public", op.path, frozenset({"POST"}), op.path_params, op.operation)
    shared = prepare(None, None)  # type: ignore[arg-type]
    stages = [s for s in (build_head(policy, route, shared), build_body(policy, route, shared)) if s is not None]
    headers = [("host", "shop"), ("content-type", "application/json"), ("content-length", str(len(BODY))),
               ("user-agent", "bench/1.0")]
    start = time.perf_counter()
    for _ in range(n):
        ctx = RequestContext(method="POST", raw_target="/orders", path="/orders", query="", headers=headers,
                             client_ip="127.0.0.1", request_id="r", start=0.0)
        ctx.body = BODY
        for stage in stages:
            if _run(stage.check(ctx)).__class__ is not Continue:
                raise RuntimeError("the benchmark body was refused")
    return (time.perf_counter() - start) / n * 1e6


def main() -> int:
    n = 20_000
    limits = JsonLimits(32, 65536, 10000, 1000)
    start = time.perf_counter()
    for _ in range(n):
        parse(BODY, limits)
    parse_us = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for _ in range(n):
        orjson.loads(BODY)
    orjson_us = (time.perf_counter() - start) / n * 1e6
    rows = [
        ("orjson.loads only (reference)", orjson_us),
        ("strict parse: duplicate keys + limits", parse_us),
        ("contract only (reject undeclared)", measure(InputPolicy(inspection="off"), n)),
        ("contract, strip mode", measure(InputPolicy(inspection="off", undeclared="strip"), n)),
        ("inspection only (paranoia 1)", measure(InputPolicy(contract="off"), n)),
        ("contract + inspection (default policy)", measure(InputPolicy(), n)),
        ("contract + inspection (paranoia 2)", measure(InputPolicy(paranoia=2), n)),
    ]
    print(f"Body: {len(BODY)} bytes of JSON, {n} iterations per row, one core\n")
    print("| what | µs per request |\n|---|---|")
    for name, micros in rows:
        print(f"| {name} | {micros:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
