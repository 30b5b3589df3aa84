"""gRPC unary for the benchmark: a grpcio echo server (the upstream) and a bounded asyncio load client.

    python bench/grpc_bench.py serve --port 18085
    python bench/grpc_bench.py load --port 18092 --duration 10 --concurrency 64

The service is `/bench.Echo/Call` with raw bytes (no generated code): the server answers every message with a
small fixed message. The load client keeps `concurrency` calls in flight on one channel for `duration`
seconds and prints one JSON line: requests, seconds, rps, p50_us, p99_us, errors. (ghz is not packaged here.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

METHOD = "/bench.Echo/Call"
REQUEST = b"\x0a\x05hello" + b"\x12\x20" + b"x" * 32  # a small protobuf-shaped message (the bytes are opaque)
RESPONSE = b"\x0a\x02ok"


async def serve(port: int) -> None:
    import grpc

    async def call(request: bytes, context: object) -> bytes:
        return RESPONSE

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def load(port: int, duration: float, concurrency: int) -> dict[str, float]:
    import grpc

    latencies: list[float] = []
    errors = 0
    codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        await call(REQUEST, timeout=5)  # connect before the clock starts
        start = time.perf_counter()
        stop = start + duration

        async def worker() -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                try:
                    await call(REQUEST, timeout=5)
                except grpc.RpcError as exc:
                    errors += 1
                    code = str(exc.code())
                    codes[code] = codes.get(code, 0) + 1
                    continue
                latencies.append((time.perf_counter() - t0) * 1e6)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    return {"requests": len(latencies), "seconds": seconds, "rps": len(latencies) / seconds,
            "p50_us": pct(0.50), "p99_us": pct(0.99), "errors": errors, "codes": codes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/grpc_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("serve", "load"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if args.mode == "serve":
        asyncio.run(serve(args.port))
        return 0
    if uvloop is not None:
        uvloop.install()
    print(json.dumps(asyncio.run(load(args.port, args.duration, args.concurrency))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
