"""Microbenchmark: the cost of auditing one request, in-process, with a real file sink.

    python bench/micro_audit.py [--n 100000]

Prints microseconds per call for: building the event alone; `AuditLog.request()` as the request path pays it
(build + queue); the whole pipeline per event (build, queue, serialise, file write, measured end to end);
`Detector.observe()` for an allowed and a denied request; and `BlockList.check()` (local view).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bastion.audit.blocks import BlockList
from bastion.audit.config import DetectionsConfig
from bastion.audit.detect import Detector
from bastion.audit.events import Ids, request_event
from bastion.audit.log import AuditLog, SinkSpec
from bastion.audit.sinks.file import FileSink
from bastion.context import ControlRecord, Deny, Identity, RequestContext

RECORDS = (ControlRecord("transport", "allow", "class:partner/orders/get-order/transport.tls"),
           ControlRecord("identity", "allow", "class:partner/orders/get-order/identity.methods"),
           ControlRecord("traffic", "allow", "class:partner/orders/get-order/traffic.rate_limits"))
DENY = Deny(401, "jwt_expired", "class:partner/orders/get-order/identity.methods", log_detail="exp in the past")


def ctx(i: int, start: float) -> RequestContext:
    c = RequestContext(method="GET", raw_target=f"/orders/{i}", path=f"/orders/{i}", query="",
                       headers=[("host", "api"), ("user-agent", "wrk")], client_ip=f"10.0.{i % 250}.{i % 200}",
                       request_id=f"r{i}", start=start)
    c.api, c.route, c.path_params = "orders", "get-order", {"order_id": str(i)}
    c.identity = Identity("jwt", subject=f"user-{i % 1000}", consumer="web-app", credential_id=f"jti-{i}")
    c.records.extend(RECORDS)
    return c


def per_call(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e6:7.2f} µs"


async def main(n: int) -> None:
    contexts = [ctx(i, 1_800_000_000.0 + i * 0.001) for i in range(1000)]
    ids = Ids()
    start = time.perf_counter()
    for i in range(n):
        request_event(ids.new(), contexts[i % 1000], 200, None, 0.0012, (), 200)
    print(f"build event (6003)               {per_call(time.perf_counter() - start, n)}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        audit = AuditLog([SinkSpec(FileSink("file", path, 1 << 34, 0), memory_events=n + 10)],
                         spool_dir=Path(tmp) / "spool", queue_size=n + 10)
        await audit.start()
        # as in the gateway: a few requests per turn of the event loop, the writer runs in between
        queued = 0.0
        start = time.perf_counter()
        for batch in range(0, n, 64):
            t0 = time.perf_counter()
            for i in range(batch, min(batch + 64, n)):
                audit.request(contexts[i % 1000], 200, None, 0.0012, (), 200)
            queued += time.perf_counter() - t0
            await asyncio.sleep(0)
        print(f"AuditLog.request() (request path) {per_call(queued, n)}")
        while audit.delivered < n:
            await asyncio.sleep(0.001)
        total = time.perf_counter() - start
        await audit.close()
        size = path.stat().st_size
        print(f"end to end incl. JSON + file     {per_call(total, n)}   ({n / total:,.0f} events/s, "
              f"{size / n:.0f} bytes/event)")

        audit = AuditLog([SinkSpec(FileSink("file", path, 1 << 34, 0))], spool_dir=Path(tmp) / "spool")
        await audit.start()
        detector = Detector(DetectionsConfig(), audit, BlockList(audit=audit))
        start = time.perf_counter()
        for i in range(n):
            detector.observe(contexts[i % 1000], 200, None)
        print(f"Detector.observe() allowed       {per_call(time.perf_counter() - start, n)}")
        start = time.perf_counter()
        for i in range(n):
            detector.observe(contexts[i % 1000], 401, DENY)
        print(f"Detector.observe() auth failure  {per_call(time.perf_counter() - start, n)}")
        blocks = BlockList()
        blocks.place("ip", "192.0.2.1", 600, "bench")
        start = time.perf_counter()
        for i in range(n):
            await blocks.check(contexts[i % 1000])
        print(f"BlockList.check() (1 block)      {per_call(time.perf_counter() - start, n)}")
        await audit.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.n))
