"""A gateway with `--workers N` as a real process tree, for the supervisor's end-to-end tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import free_port, http_get, process_config, wait_http

BASTION = [sys.executable, "-m", "bastion"]


class Gateway:
    """`bastion serve --workers N` on free ports, with an upstream; `get`, `admin`, `post_admin` helpers."""

    def __init__(self, tmp_path: Path, workers: int = 2, extra_gateway: str = "", extra: str = "") -> None:
        self.tmp_path = tmp_path
        self.port, self.admin_port, self.upstream = free_port(), free_port(), free_port()
        self.path = tmp_path / "bastion.yaml"
        self.path.write_text(process_config(self.port, self.admin_port, self.upstream, extra_gateway, extra))
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.upstream_proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.upstream_proc = subprocess.Popen([sys.executable, "-m", "bastion.demo.upstream", str(self.upstream)])
        self.proc = subprocess.Popen([*BASTION, "serve", "-c", str(self.path), "--workers", str(self.workers)],
                                     cwd=self.tmp_path)
        wait_http(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=30)

    def stop(self) -> None:
        for proc in (self.proc, self.upstream_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def get(self, path: str) -> int:
        return http_get(f"http://127.0.0.1:{self.port}{path}")[0]

    def admin(self, path: str) -> tuple[int, Any]:
        status, _, body = http_get(f"http://127.0.0.1:{self.admin_port}{path}")
        return status, json.loads(body) if body.startswith((b"{", b"[")) else body

    def post_admin(self, path: str, doc: Any = None) -> tuple[int, Any]:
        data = json.dumps(doc).encode() if doc is not None else b""
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", data=data, method="POST",
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def workers_info(self) -> list[dict[str, Any]]:
        return list(self.admin("/config")[1]["workers"])

    def wait_linked(self, timeout: float = 10.0, exclude: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
        """Wait until every slot runs a linked worker whose pid is not in `exclude`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = self.workers_info()
            if all(w["linked"] and w["pid"] not in exclude for w in workers):
                return workers
            time.sleep(0.02)
        raise AssertionError(f"workers not back: {self.workers_info()}")


@contextmanager
def gateway(tmp_path: Path, workers: int = 2, extra_gateway: str = "", extra: str = "") -> Iterator[Gateway]:
    gw = Gateway(tmp_path, workers, extra_gateway, extra)
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()
