"""A real 3-primary Redis Cluster on free loopback ports, for tests (no persistence, no replicas).

`cluster-require-full-coverage no`, as the runbook recommends: losing one primary makes only its slots
unavailable, the others keep answering.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import claim_port


def cluster_ports(count: int) -> list[int]:
    """Distinct free ports whose cluster bus port (port + 10000) is free too."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            client = socket.socket()
            client.bind(("127.0.0.1", 0))
            held.append(client)
            port = client.getsockname()[1]
            if port + 10000 > 65535:
                continue
            bus = socket.socket()
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            finally:
                bus.close()
            # handed out for the session: a node a test kills must get its ports back when started again
            if claim_port(port) and claim_port(port + 10000):
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def _command(port: int, *args: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        parts = [f"*{len(args)}\r\n"] + [f"${len(a)}\r\n{a}\r\n" for a in args]
        sock.sendall("".join(parts).encode())
        return sock.recv(65536).decode(errors="replace")


class RedisCluster:
    """`start()` runs three cluster-enabled redis-servers and joins them (16384 slots over 3 primaries)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = cluster_ports(3)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def start_node(self, port: int) -> None:
        self.processes[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
             "--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no", "--loglevel", "warning"],
            cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli not found on PATH; install redis-tools")
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            for port in self.ports:
                self.start_node(port)
            for port in self.ports:
                self._wait(lambda p=port: "PONG" in _command(p, "PING"))
            subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                            "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)
            for port in self.ports:
                self._wait(lambda p=port: "cluster_state:ok" in _command(p, "CLUSTER", "INFO"))
        except BaseException:
            self.stop()
            raise

    def _wait(self, ready, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis cluster did not come up")

    def flush(self) -> None:
        for port in self.ports:
            if port in self.processes:
                _command(port, "FLUSHALL")

    def kill(self, port: int) -> None:
        proc = self.processes.pop(port)
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
