"""Three gateway nodes in three network namespaces, one Redis between them: run as root of a private user,
network and mount namespace (`unshare -rnm python -m tests.e2e.netns_lab DIR`), prints one JSON result.

```
 lab namespace (the client, redis-server on 10.88.{0,1,2}.1)
   h0 10.88.0.1 ── veth ── n0 10.88.0.2  namespace node0: bastion serve, demo upstream on its own 127.0.0.1
   h1 10.88.1.1 ── veth ── n1 10.88.1.2  namespace node1: ...
   h2 10.88.2.1 ── veth ── n2 10.88.2.2  namespace node2: ...
```
Each node has its own loopback, addresses and ports: the same port numbers on every node, nothing shared but
Redis over the (virtual) wire. Every address is private to the lab namespace and disappears with it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import early_in_a_window

NODES = 3
REDIS_PORT = 6379
PORT, ADMIN, UPSTREAM = 8080, 9901, 8081  # the same on every node: each has its own network stack
TOKEN = "lab-admin-token"  # off loopback the admin API requires auth


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def setup() -> None:
    sh("mount", "-t", "tmpfs", "lab", "/run")  # this mount namespace's own /run (for /run/netns)
    Path("/run/netns").mkdir()
    sh("ip", "link", "set", "lo", "up")
    for i in range(NODES):
        sh("ip", "netns", "add", f"node{i}")
        sh("ip", "link", "add", f"h{i}", "type", "veth", "peer", "name", f"n{i}")
        sh("ip", "link", "set", f"n{i}", "netns", f"node{i}")
        sh("ip", "addr", "add", f"10.88.{i}.1/24", "dev", f"h{i}")
        sh("ip", "link", "set", f"h{i}", "up")
        inside = ("ip", "netns", "exec", f"node{i}")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "addr", "add", f"10.88.{i}.2/24", "dev", f"n{i}")
        sh(*inside, "ip", "link", "set", f"n{i}", "up")


def config(i: int) -> str:
    return textwrap.dedent(f"""
        version: 1
        gateway:
          listeners: [{{address: 10.88.{i}.2, port: {PORT}}}]
          admin: {{address: 10.88.{i}.2, port: {ADMIN}, auth: {{token_sha256: [{hashlib.sha256(TOKEN.encode()).hexdigest()}]}}}}
          trusted_proxies: [10.88.{i}.1/32]
          state: redis://10.88.{i}.1:{REDIS_PORT}/0
        classes:
          limited:
            identity: {{required: false}}
            traffic: {{rate_limits: [{{name: per-client, limit: 20, window: 1m, key: client_ip}}]}}
        apis:
          - name: shop
            owner: team@example.com
            class: limited
            upstream: http://127.0.0.1:{UPSTREAM}
            routes: [{{name: items, path: /items, methods: [GET]}}]
        """)


def call(i: int, path: str, client: str, method: str = "GET", doc: object = None,
         port: int = PORT) -> tuple[int, bytes]:
    data = json.dumps(doc).encode() if doc is not None else None
    request = urllib.request.Request(f"http://10.88.{i}.2:{port}{path}", data=data, method=method,
                                     headers={"x-forwarded-for": client, "content-type": "application/json"})
    if port == ADMIN:
        request.add_header("authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait(i: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if call(i, "/readyz", "", port=ADMIN)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"node {i} not ready")


def run(directory: Path) -> dict[str, object]:
    setup()
    binds = [f"10.88.{i}.1" for i in range(NODES)]
    procs = [subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(REDIS_PORT),
                               "--bind", *binds, "--protected-mode", "no", "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)]
    try:
        for i in range(NODES):
            path = directory / f"node{i}.yaml"
            path.write_text(config(i))
            inside = ["ip", "netns", "exec", f"node{i}"]
            procs.append(subprocess.Popen([*inside, sys.executable, "-m", "bastion.demo.upstream", str(UPSTREAM)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen([*inside, sys.executable, "-m", "bastion", "serve", "-c", str(path)],
                                          cwd=directory))
        for i in range(NODES):
            wait(i)
        result: dict[str, object] = {}
        # what a node's upstream sees: the request came over the wire from the lab side of its veth
        status, body = call(1, "/items", "203.0.113.5")
        result["upstream_saw_forwarded_for"] = json.loads(body).get("headers", {}).get("x-forwarded-for")
        early_in_a_window()  # a minute edge within the run would rightly admit a 21st
        statuses = [call(i % NODES, "/items", "203.0.113.1")[0] for i in range(60)]
        result["limit_admitted"], result["limit_refused"] = statuses.count(200), statuses.count(429)
        result["before_block"] = call(1, "/items", "203.0.113.2")[0]  # node 1 now caches "not blocked" for 1 s
        result["block_status"] = call(0, "/blocks", "", "POST", {"kind": "ip", "key": "203.0.113.2", "seconds": 60},
                                      port=ADMIN)[0]
        # counted to the start of the check that saw the block everywhere: the requests' own latency on a loaded
        # machine is not the propagation under test
        start = time.monotonic()
        while (began := time.monotonic() - start) < 5 and not all(call(i, "/items", "203.0.113.2")[0] == 403
                                                                  for i in range(1, NODES)):
            time.sleep(0.02)
        result["block_elsewhere_after"] = round(began, 3)
        return result
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]))))
