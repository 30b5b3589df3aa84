"""Three gateway processes sharing one real Redis: a rate limit holds across them, a block or revocation made on
one node applies on the others within a second, and a detection fed by all three fires at its threshold."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

from bastion.stages.identity import new_api_key
from tests.helpers import early_in_a_window, free_port, gateway_nodes, process_config, stop_processes, wait_http

KEY, LINE = new_api_key("acme")
OTHER_KEY, OTHER_LINE = new_api_key("globex")


def node_config(port: int, admin: int, upstream: int, redis_url: str) -> str:
    return textwrap.dedent(f"""
        version: 1
        gateway:
          listeners: [{{address: 127.0.0.1, port: {port}}}]
          admin: {{address: 127.0.0.1, port: {admin}}}
          trusted_proxies: [127.0.0.1/32]
          state: {redis_url}
          audit:
            detections: {{credential_stuffing: {{threshold: 6, window: 60s, block: [ip], block_for: 60s}}}}
        consumers:
          - {{name: acme, credentials: [{LINE.split("  #")[0][2:]}]}}
          - {{name: globex, credentials: [{OTHER_LINE.split("  #")[0][2:]}]}}
        classes:
          partner:
            identity: {{required: true, methods: [api_key]}}
          limited:
            identity: {{required: false}}
            traffic: {{rate_limits: [{{name: per-client, limit: 20, window: 1m, key: client_ip}}]}}
        apis:
          - name: partners
            owner: team@example.com
            class: partner
            upstream: http://127.0.0.1:{upstream}
            base_path: /partners
            routes: [{{name: orders, path: /orders, methods: [GET]}}]
          - name: shop
            owner: team@example.com
            class: limited
            upstream: http://127.0.0.1:{upstream}
            base_path: /shop
            routes: [{{name: items, path: /items, methods: [GET]}}]
        """)


def call(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
         doc: object = None) -> int:
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def until(predicate, timeout: float = 1.0) -> float:
    """Seconds until `predicate()` held, counted to the start of the check that saw it. Fails when a check begun
    after `timeout` still does not see it; a check begun before may take long to answer on a loaded machine (the
    requests' own latency is not the propagation under test), and is followed by one more."""
    start = time.monotonic()
    while True:
        began = time.monotonic() - start
        if predicate():
            return began
        assert began < timeout, f"not within the time allowed: still not so when checked {began:.2f}s after"
        time.sleep(0.02)


def test_three_nodes_agree(tmp_path: Path, redis_server) -> None:
    def config(port: int, admin: int, upstream: int) -> str:
        return node_config(port, admin, upstream, redis_server.url)

    with gateway_nodes(tmp_path, 3, config) as nodes:
        # a limit of 20 per minute admits 20 over three nodes (no lease configured: no slack)
        client = {"x-forwarded-for": "203.0.113.1"}
        early_in_a_window()  # a minute edge within the run would rightly admit a 21st
        statuses = [call(nodes[i % 3][0], "/shop/items", client) for i in range(60)]
        assert statuses.count(200) == 20 and statuses.count(429) == 40

        # a block placed on node 0 applies on nodes 1 and 2 within a second
        blocked = {"x-forwarded-for": "203.0.113.2"}
        assert call(nodes[1][0], "/shop/items", blocked) == 200
        assert call(nodes[0][1], "/blocks", method="POST", doc={"kind": "ip", "key": "203.0.113.2", "seconds": 60}) == 200
        until(lambda: all(call(port, "/shop/items", blocked) == 403 for port, _ in nodes[1:]))

        # a revocation made on node 0 applies on the others at once (every node asks Redis)
        acme = {"x-api-key": KEY, "x-forwarded-for": "203.0.113.3"}
        assert all(call(port, "/partners/orders", acme) == 200 for port, _ in nodes)
        assert call(nodes[0][1], "/revocations", method="POST",
                    doc={"kind": "consumer", "value": "acme", "seconds": 60}) == 200
        until(lambda: all(call(port, "/partners/orders", acme) == 401 for port, _ in nodes[1:]))
        globex = {"x-api-key": OTHER_KEY, "x-forwarded-for": "203.0.113.3"}
        assert call(nodes[2][0], "/partners/orders", globex) == 200  # only acme is revoked

        # credential stuffing from one address spread over three nodes: blocked at the 6th failure, not the 18th
        attacker = "198.51.100.9"
        bad = {"x-api-key": "bsk_not-a-real-key", "x-forwarded-for": attacker}
        good = {"x-api-key": OTHER_KEY, "x-forwarded-for": attacker}
        for i in range(5):
            assert call(nodes[i % 3][0], "/partners/orders", bad) == 401
        time.sleep(0.3)  # the shared count is asynchronous: give it time to (wrongly) fire
        assert all(call(port, "/partners/orders", good) == 200 for port, _ in nodes)  # 5 < 6: not blocked
        assert call(nodes[2][0], "/partners/orders", bad) == 401  # the 6th failure
        until(lambda: all(call(port, "/partners/orders", good) == 403 for port, _ in nodes), timeout=1.5)


def test_two_nodes_share_enumeration_and_usage_anomaly_windows(tmp_path: Path, redis_server) -> None:
    from tests.server.workers import DETECTIONS, detections_hold_at_their_threshold, not_found_upstream, vault_api

    upstream = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "bastion.demo.upstream", str(upstream)])]
    ports, audit_files, admins = [], [], []
    try:
        with not_found_upstream(tmp_path) as missing:
            for i in range(2):
                node = tmp_path / f"node{i}"
                node.mkdir()
                port, admin = free_port(), free_port()
                (node / "bastion.yaml").write_text(process_config(
                    port, admin, upstream, f"state: {redis_server.url}\n" + DETECTIONS, vault_api(missing)))
                procs.append(subprocess.Popen([sys.executable, "-m", "bastion", "serve", "-c",
                                               str(node / "bastion.yaml")]))
                ports.append(port)
                audit_files.append(node / "audit.jsonl")
                admins.append(admin)
            for admin in admins:
                wait_http(f"http://127.0.0.1:{admin}/readyz")
            detections_hold_at_their_threshold(ports, audit_files)
    finally:
        stop_processes(procs)


def test_three_nodes_in_separate_network_namespaces(tmp_path: Path) -> None:
    """The same agreement with each node in a network namespace of its own (tests/e2e/netns_lab.py), inside a
    private network + mount namespace: an unprivileged user namespace where the kernel allows one, else (as root,
    as CI runs) the namespaces directly. No skip: a machine that allows neither fails here, saying why."""
    import os

    flags = next((f for f in ("-rnm", "-nm")
                  if (f == "-rnm" or os.geteuid() == 0)
                  and subprocess.run(["unshare", f, "true"], capture_output=True).returncode == 0), None)
    assert flags, "cannot create a network namespace here: needs unprivileged user namespaces or root (unshare)"
    root = Path(__file__).resolve().parents[2]
    lab = subprocess.run(["unshare", flags, sys.executable, "-m", "tests.e2e.netns_lab", str(tmp_path)],
                         capture_output=True, cwd=root, timeout=120)
    assert lab.returncode == 0, lab.stderr.decode()[-2000:]
    result = json.loads(lab.stdout.decode().strip().splitlines()[-1])
    assert result["upstream_saw_forwarded_for"] == "203.0.113.5, 10.88.1.1"  # the client, then the veth peer
    assert (result["limit_admitted"], result["limit_refused"]) == (20, 40)  # 20 per minute over three nodes
    assert (result["before_block"], result["block_status"]) == (200, 200)
    assert result["block_elsewhere_after"] < 1.2  # a block made on node 0 holds on nodes 1 and 2 within ~1 s
