"""Microbenchmark: the gateway's own Python work per proxied request, with no sockets at all.

    python bench/micro_core.py [--n 50000]
        [--post | --jwt | --jwt-new | --limit | --chain | --chain-new | --full | --pool]
        [--tokens-dir DIR] [--gc] [--callgrind] [--profile]

A real `Runtime` compiles a plain route (every control off), then one client connection and one pooled upstream
connection are driven through in-memory transports: the client "sends" a request, the gateway parses, routes,
forwards; the upstream "answers" (a canned nginx-like response, delivered by the next loop iteration) and the
response is written back. Each response triggers the next request, so the loop runs N requests back to back.
`--jwt` sends a GET with an ES256 bearer token to a route that requires it (the verified-token cache hit: what
a cached JWT costs on top of the plain path); `--limit` a GET on a route with one in-memory rate limit;
`--chain` the identity chain Envoy is compared on (cached JWT + a required scope + that rate limit);
`--jwt-new` the `--jwt` route with a new ES256 token on every request (each one a verified-token cache miss:
parse, signature, claims; the tokens are minted before the clock starts); `--chain-new` the `--chain` route with a
new token on every request (the "new token each request" scenario Envoy is compared on); `--full` the bench's
`full-chain-post-1k` (the 1 KB POST with a cached JWT, scope, rate limit, OpenAPI contract, injection inspection
and an audit event per request to a file sink, as bench/scenarios.py builds it). `--tokens-dir DIR` keeps
the signing key and the minted tokens in DIR and reuses them on the next run, so that under callgrind minting
does not enter the difference of two runs. `--gc` counts the cyclic collector's runs per generation over the
measured requests (`gc.callbacks`), after a `gc.freeze()` as `bastion serve` makes. `--callgrind`, under
`valgrind --tool=callgrind --instr-atstart=no`, switches callgrind's instrumentation on (`callgrind_control -i on`)
just before the measured requests and off after them: start-up and warm-up run uninstrumented (several times
faster), and the instructions of two runs' difference are those of the extra requests alone.

What it measures is everything Bastion adds on top of the kernel: the figure wrk cannot isolate, as each real
request also pays ~20 µs of socket syscalls on this machine (see bench/RESULTS.md). Prints CPU µs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from bastion.server.app import Runtime
from bastion.server.http1 import Http1Connection
from bastion.server.settings import server_limits, settle_heap
from bastion.server.upstream import UpstreamConnection, UpstreamPool
from bench import scenarios, tokens
from tests.server.memory import MemoryTransport

CONFIG = """\
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
  admin: {enabled: false}
classes:
  plain:
    identity: {required: false, methods: []}
    input: {contract: "off", inspection: "off"}
    response: {undeclared: allow, rewrite_errors: false, security_headers: {nosniff: false,
      no_store_authenticated: false, frame_options: "off", referrer_policy: "off", hsts_max_age: 0}}
apis:
  - name: bench
    owner: perf@example.com
    class: plain
    upstream: http://127.0.0.1:9
    routes:
      - {name: get, path: /get, methods: [GET]}
      - {name: post, path: /post, methods: [POST]}
      - name: limited
        path: /limited
        methods: [GET]
        policy: {traffic: {rate_limits: [{name: bench, algorithm: sliding_window, limit: 1000000000, window: 1s,
                                          key: client_ip}]}}
  - name: bench-pool
    owner: perf@example.com
    class: plain
    upstream: [http://127.0.0.1:9, http://127.0.0.1:10]
    routes:
      - {name: pool, path: /pool, methods: [GET]}
  - name: bench-jwt
    owner: perf@example.com
    class: authn
    upstream: http://127.0.0.1:9
    routes:
      - {name: jwt, path: /jwt, methods: [GET]}
      - name: chain
        path: /chain
        methods: [GET]
        policy:
          authz: {scopes: ["bench:read"]}
          traffic: {rate_limits: [{name: bench, algorithm: sliding_window, limit: 1000000000, window: 1s,
                                   key: client_ip}]}
providers:
  jwt:
    - {name: bench, issuer: "https://idp.bench.invalid", audiences: ["api://bench"], algorithms: [ES256],
       jwks_file: "{tmp}/jwks.json"}
"""
AUTHN_CLASS = """  authn:
    identity: {required: true, methods: [jwt]}
    input: {contract: "off", inspection: "off"}
    response: {undeclared: allow, rewrite_errors: false, security_headers: {nosniff: false,
      no_store_authenticated: false, frame_options: "off", referrer_policy: "off", hsts_max_age: 0}}
"""

GET = b"GET /get HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"  # what wrk sends
BODY = b'{"k":"' + b"x" * 1000 + b'"}'
POST = (b"POST /post HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(BODY), BODY))
ANSWER = b'{"ok":true,"service":"bench","items":[1,2,3]}'
UPSTREAM_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 17:00:00 GMT\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%b"
                     % (len(ANSWER), ANSWER))


def full_chain_config(tmp: Path, keys: Path) -> str:
    """The bench's full-chain scenario as one gateway, on an unbound port with no admin listener."""
    scenario = next(s for s in scenarios.SCENARIOS if s.name == "full-chain-post-1k")
    config = scenarios.bastion_config([scenario], variant=scenario.variant, tmp=tmp)
    config["gateway"]["listeners"] = [{"address": "127.0.0.1", "port": 0}]
    config["gateway"]["admin"] = {"enabled": False}
    config["apis"][0]["upstream"] = config["apis"][1]["upstream"] = "http://127.0.0.1:9"
    config["providers"]["jwt"][0]["jwks_file"] = str(keys / "jwks.json")
    return scenarios.dump(config)


FULL_BODY = scenarios.PAYLOAD_1K.read_bytes()


def memory_upstream(pool: UpstreamPool) -> UpstreamConnection:
    """A pooled upstream connection that answers each request on the next loop iteration, as a socket would."""
    loop = asyncio.get_running_loop()
    upstream = UpstreamConnection(pool)
    answering = False

    def received(data: bytes) -> None:
        nonlocal answering
        if not answering:  # one answer per request, however many writes carried it
            answering = True
            loop.call_soon(answer)

    def answer() -> None:
        nonlocal answering
        answering = False
        upstream.data_received(UPSTREAM_RESPONSE)

    upstream.connection_made(MemoryTransport(received, ("127.0.0.1", 9)))
    pool._open += 1  # as if the pool had connected it
    upstream.reusable = True
    return upstream


async def drive(runtime: Runtime, n: int, request: bytes | list[bytes]) -> float:
    """Send `request` n times (a list: its items in turn, one per request)."""
    if isinstance(request, list):
        cycle = iter(request)
        first = next(cycle)

        def following() -> bytes:
            return next(cycle)
    else:
        first = request

        def following() -> bytes:
            return request  # type: ignore[return-value]
    loop = asyncio.get_running_loop()
    gateway = runtime.gateway
    assert gateway is not None
    limits = server_limits(gateway.compiled.config.model.gateway)
    done = loop.create_future()
    remaining = n
    client = Http1Connection(gateway.handle, limits, runtime.connections, gateway.on_protocol_error)

    def client_received(data: bytes) -> None:  # the gateway answered: send the next request
        nonlocal remaining
        if not data.startswith(b"HTTP/1.1 200"):
            done.set_exception(RuntimeError(data[:300].decode("latin-1")))
            return
        remaining -= 1
        if remaining == 0:
            done.set_result(None)
        else:
            loop.call_soon(client.data_received, following())

    for pool in gateway.pools.values():  # one pooled connection per upstream, answering every request
        pool.release(memory_upstream(pool))
    for targets in gateway.target_pools.values():  # and per target of a pool
        for target in targets.targets:
            target.conns.release(memory_upstream(target.conns))
    client.connection_made(MemoryTransport(client_received, ("127.0.0.1", 50000)))
    started = time.process_time()
    client.data_received(first)
    await done
    return time.process_time() - started


def new_tokens(keys: Path, count: int, reuse: bool) -> list[str]:
    """`count` distinct tokens signed by the key in `keys` (read back from `keys` when `reuse` and minted before)."""
    saved = keys / "tokens.txt"
    if reuse and saved.exists():
        minted = saved.read_text().split()
        if len(minted) >= count:
            return minted[:count]
    minted = tokens.mint(keys, "https://idp.bench.invalid", "api://bench", count=count)
    if reuse:
        saved.write_text("\n".join(minted))
    return minted


class CollectionCount:
    """The cyclic collector's runs per generation and their CPU time, while `on`."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.seconds = 0.0
        self.tracked = 0
        self.on = False
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._started = time.process_time()
        else:
            self.runs[info["generation"]] += 1
            self.seconds += time.process_time() - self._started


def instrument(state: str) -> None:
    """Switch callgrind's instrumentation of this process on or off, and wait until it has."""
    answer = subprocess.Popen(["callgrind_control", "-i", state, str(os.getpid())], stdout=subprocess.DEVNULL)
    while answer.poll() is None:  # callgrind answers between two of our basic blocks: keep running some
        time.sleep(0.001)
    if answer.returncode != 0:
        raise RuntimeError(f"callgrind_control -i {state} failed: run under valgrind --tool=callgrind")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bastion.yaml"
        keys = Path(args.tokens_dir) if args.tokens_dir else Path(tmp)
        keys.mkdir(parents=True, exist_ok=True)
        token = tokens.mint(keys, "https://idp.bench.invalid", "api://bench")[0]
        if args.full:
            path.write_text(full_chain_config(Path(tmp), keys))
        else:
            path.write_text(CONFIG.replace("apis:", AUTHN_CLASS + "apis:", 1).replace("{tmp}", str(keys)))
        runtime = Runtime(path)
        await runtime.start()
        request = POST if args.post else GET
        if args.limit:
            request = GET.replace(b"/get", b"/limited")
        if args.chain:
            request = b"GET /chain HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer %b\r\n\r\n" % token.encode()
        if args.full:
            request = (b"POST /full/post HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer %b\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                       % (token.encode(), len(FULL_BODY), FULL_BODY))
        if args.pool:
            request = GET.replace(b"/get", b"/pool")
        if args.jwt:
            request = b"GET /jwt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer %b\r\n\r\n" % token.encode()
        new = args.jwt_new or args.chain_new
        if new:  # one new token per request, warm-up included
            target = b"/chain" if args.chain_new else b"/jwt"
            minted = new_tokens(keys, args.warmup + args.n, bool(args.tokens_dir))
            fresh = [b"GET %b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer %b\r\n\r\n"
                     % (target, t.encode()) for t in minted]
        collections = CollectionCount() if args.gc else None
        try:
            if new:
                await drive(runtime, args.warmup, fresh[:args.warmup])
                fresh = fresh[args.warmup:]
            else:
                await drive(runtime, args.warmup, request)  # warm-up
            if collections is not None:
                settle_heap()  # as `bastion serve` does after start-up
                collections.on = True
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
            if args.callgrind:
                instrument("on")
            seconds = await drive(runtime, args.n, fresh if new else request)
            if args.callgrind:
                instrument("off")
            if args.profile:
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(40)
            if collections is not None:
                collections.on = False
                gc.collect()  # tuples and dicts of atoms only are untracked by a collection that sees them
                collections.tracked = len(gc.get_objects())  # made since the freeze, alive and tracked
        finally:
            await runtime.stop(drain_timeout=0.1)
    shape = "GET to a pool of two targets" if args.pool else "POST 1 KB" if args.post else \
        "GET with a cached JWT" if args.jwt else "GET with a new JWT each request" if args.jwt_new \
        else "GET, identity chain (cached JWT + scope + rate limit)" if args.chain \
        else "GET, identity chain, a new JWT each request" if args.chain_new \
        else "POST 1 KB, full chain (JWT + scope + rate limit + contract + inspection + audit)" if args.full \
        else "GET, rate-limited" if args.limit else "GET"
    print(f"{shape}: {seconds * 1e6 / args.n:.1f} µs CPU per request "
          f"(in-process, no sockets; n={args.n})")
    if collections is not None:
        runs = collections.runs
        print(f"GC collections gen0/gen1/gen2: {runs[0]}/{runs[1]}/{runs[2]} "
              f"({collections.seconds * 1e6 / args.n:.1f} µs CPU per request in collections); {collections.tracked} "
              f"tracked objects made by the measured requests still alive ({collections.tracked / args.n:.2f} per "
              "request: with new tokens, what each cached credential holds while the cache is not full)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--post", action="store_true")
    shape.add_argument("--jwt", action="store_true")
    shape.add_argument("--jwt-new", action="store_true", help="a new ES256 token each request (cache misses)")
    shape.add_argument("--limit", action="store_true")
    shape.add_argument("--chain", action="store_true", help="cached JWT + scope + rate limit (Envoy's chain)")
    shape.add_argument("--chain-new", action="store_true", help="the --chain route with a new token each request")
    shape.add_argument("--full", action="store_true", help="the 1 KB POST through the full chain (+ contract, "
                       "inspection and an audit event per request)")
    shape.add_argument("--pool", action="store_true", help="a route whose upstream is a pool of two targets")
    parser.add_argument("--warmup", type=int, default=2000, help="requests before the measured ones (fewer: "
                        "shorter callgrind runs; per-request instructions are the difference of two --n)")
    parser.add_argument("--tokens-dir", help="keep the key and minted tokens here and reuse them (callgrind runs)")
    parser.add_argument("--gc", action="store_true", help="count GC collections over the measured requests")
    parser.add_argument("--callgrind", action="store_true", help="under callgrind with --instr-atstart=no: "
                        "instrument the measured requests only")
    parser.add_argument("--profile", action="store_true")
    uvloop.run(main(parser.parse_args()))
