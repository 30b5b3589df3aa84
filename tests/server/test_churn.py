"""Flat memory under churn: 100,000 distinct tokens, client addresses and subjects through the gateway.

In-process and without sockets (the in-memory transports of bench/micro_core.py): one keep-alive client
connection behind a trusted proxy, each request with a never-seen HS256 token (own `sub` and `jti`) and its own
X-Forwarded-For address, on a route with a per-client rate limit and the detectors on. Every per-key table is
then keyed by something new on every request: the verified-token cache, identities, rate-limit counters,
shared-block look-ups, detection windows.

The stated bound: the tables are sized so that 20,000 requests fill them all (token cache 10,000; rate-limit
keys and detector keys 10,000 each). From there to 100,000 requests, RSS may grow by at most 12 MiB (allocator
noise), and over the whole run by at most 96 MiB. Before the tables were bounded by design it grew linearly.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import hmac
import json
import time

import pytest

from bastion.server.app import Runtime, server_limits
from bastion.server.http1 import Http1Connection
from bastion.stages.base import Services
from bastion.state.memory import MemoryState
from bench.micro_core import memory_upstream
from tests.server.memory import MemoryTransport

pytestmark = pytest.mark.asyncio

SECRET = b"churn-test-secret-of-32-bytes-ok!"
ISSUER = "https://idp.churn.invalid"
TABLE_SIZE = 10_000
CONFIG = """\
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
  admin: {enabled: false}
  trusted_proxies: [127.0.0.1/32]
  audit: {detections: {max_keys: 10000}}
classes:
  authn:
    identity: {required: true, methods: [jwt]}
    input: {contract: "off", inspection: "off"}
apis:
  - name: churn
    owner: perf@example.com
    class: authn
    upstream: http://127.0.0.1:9
    routes:
      - name: get
        path: /get
        methods: [GET]
        policy: {traffic: {rate_limits: [{name: per-client, algorithm: sliding_window, limit: 1000, window: 60s,
                                          key: client_ip}]}}
providers:
  jwt:
    - {name: churn, issuer: "https://idp.churn.invalid", audiences: ["api://churn"], algorithms: [HS256],
       jwks_file: "{jwks}"}
"""


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_HEADER = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": "churn"}).encode())


def _token(i: int, now: int) -> bytes:
    """A fresh HS256 token in a few microseconds (the gateway verifies it in full)."""
    claims = {"iss": ISSUER, "aud": "api://churn", "sub": f"user-{i}", "jti": f"t-{i}", "iat": now,
              "exp": now + 3600, "client_id": "churn"}
    signing = _HEADER + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
    return signing + b"." + _b64(hmac.new(SECRET, signing, hashlib.sha256).digest())


def _request(i: int, now: int) -> bytes:
    address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    return (b"GET /get HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: %b\r\nAuthorization: Bearer %b\r\n\r\n"
            % (address.encode(), _token(i, now)))


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


async def _drive(runtime: Runtime, first: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    gateway = runtime.gateway
    assert gateway is not None
    done: asyncio.Future[None] = loop.create_future()
    now = int(time.time())
    state = {"next": first}
    client = Http1Connection(gateway.handle, server_limits(gateway.compiled.config.model.gateway),
                             runtime.connections, gateway.on_protocol_error)

    def received(data: bytes) -> None:
        if not data.startswith(b"HTTP/1.1 200"):
            if not done.done():
                done.set_exception(AssertionError(data[:300].decode("latin-1")))
            return
        state["next"] += 1
        if state["next"] == first + count:
            done.set_result(None)
        else:
            loop.call_soon(client.data_received, _request(state["next"], now))

    for pool in gateway.pools.values():
        pool.release(memory_upstream(pool))
    client.connection_made(MemoryTransport(received, ("127.0.0.1", 50000)))
    client.data_received(_request(first, now))
    await done
    client.close()


async def test_rss_stays_flat_through_100000_distinct_tokens_addresses_and_subjects(tmp_path):
    key = {"kty": "oct", "kid": "churn", "alg": "HS256", "k": _b64(SECRET).decode()}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [key]}))
    path = tmp_path / "bastion.yaml"
    path.write_text(CONFIG.replace("{jwks}", str(tmp_path / "jwks.json")))
    runtime = Runtime(path, services=Services(state=MemoryState(max_keys=TABLE_SIZE)))
    await runtime.start()
    try:
        start = _rss()
        await _drive(runtime, 0, 20_000)  # fills every table
        gc.collect()
        full = _rss()
        await _drive(runtime, 20_000, 80_000)
        gc.collect()
        end = _rss()
        print(f"RSS start {start >> 20} MiB, tables full {full >> 20} MiB, after 100,000 {end >> 20} MiB")
    finally:
        await runtime.stop(drain_timeout=0.1)
    assert end - full < 12 * 1024 * 1024, "memory grows with distinct credentials"
    assert end - start < 96 * 1024 * 1024
