"""The `bastion` command as a user runs it: real processes, real sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, http_get, process_config, wait_http

BASTION = [sys.executable, "-m", "bastion"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASTION, *args], capture_output=True, text=True, timeout=60)


def write_config(tmp_path: Path, port: int, admin: int, upstream: int, extra: str = "") -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(process_config(port, admin, upstream, extra=extra))
    return path


def get(url: str) -> tuple[int, bytes]:
    status, _, body = http_get(url)
    return status, body


@pytest.fixture
def upstream():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bastion.demo.upstream", str(port)])
    yield port
    proc.kill()
    proc.wait()


def test_version_and_usage():
    assert run("version").stdout.startswith("bastion ")
    assert run("validate").returncode == 2  # usage: -c is required
    assert run("frobnicate").returncode == 2


def test_validate_exit_codes_and_error_format(tmp_path):
    good = write_config(tmp_path, 8080, 9901, 9000)
    result = run("validate", "-c", str(good))
    assert result.returncode == 0 and "valid (2 routes" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("owner: team-shop@example.com", "owner: team-shop@example.com\n    colour: red"))
    result = run("validate", "-c", str(bad))
    assert result.returncode == 1
    line = bad.read_text().splitlines().index("    colour: red") + 1  # the error points at the field's own line
    assert f"{bad}:{line}:5: apis[0].colour: unknown field" in result.stderr
    result = run("validate", "-c", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_explain_shows_sources_and_exception_expiry(tmp_path):
    path = write_config(tmp_path, 8080, 9901, 9000, textwrap.dedent("""
        exceptions:
          - id: EXC-9
            target: {api: shop, route: slow}
            controls: [identity]
            owner: ops@example.com
            reason: load test
            evidence: https://tickets.example.com/9
            created: CREATED
            expires: 2999-01-01T00:00:00Z
        """))
    # the CLI reads the real clock: dates relative to it, so the test means the same on any day
    day = 86400
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - day))
    expires = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 30 * day))
    path.write_text(path.read_text().replace("CREATED", created))
    result = run("explain", "-c", str(path), "shop/slow", "--json")
    assert result.returncode == 1 and "lasts" in result.stderr  # 90-day maximum
    path.write_text(path.read_text().replace("2999-01-01T00:00:00Z", expires))
    doc = json.loads(run("explain", "-c", str(path), "shop/slow", "--json").stdout)[0]
    assert doc["controls"]["identity.required"] == {"value": "waived", "source": "exception:EXC-9"}
    assert doc["controls"]["traffic.max_body_bytes"]["source"] == "class:open"
    assert doc["exceptions"] == [{"id": "EXC-9", "expires": expires}]
    text = run("explain", "-c", str(path)).stdout
    assert "shop/items  GET /items  class=open" in text


def test_workers_share_the_port_reload_and_drain_gracefully(tmp_path, upstream):
    port, admin = free_port(), free_port()
    path = write_config(tmp_path, port, admin, upstream)
    proc = subprocess.Popen([*BASTION, "serve", "-c", str(path), "--workers", "2"])
    try:
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        wait_http(f"http://127.0.0.1:{port}/items")
        for _ in range(40):
            assert get(f"http://127.0.0.1:{port}/items")[0] == 200
        served, deadline = 0.0, time.monotonic() + 15
        while served < 41 and time.monotonic() < deadline:  # workers hand their counts over every second (or later)
            time.sleep(0.2)
            metrics = get(f"http://127.0.0.1:{admin}/metrics")[1].decode()
            served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                         if line.startswith("http_server_request_duration_seconds_count{"))
        assert served >= 41
        for series in ("bastion_exceptions_active", "bastion_connections_open"):
            assert f"\n{series}" in metrics, series  # set by the workers, aggregated by the supervisor
        workers = json.loads(get(f"http://127.0.0.1:{admin}/config")[1])["workers"]
        assert len(workers) == 2

        path.write_text(path.read_text().replace("path: /items", "path: /goods"))
        reload = run("reload", "-c", str(path))
        assert reload.returncode == 0, reload.stderr
        deadline, streak = time.monotonic() + 10, 0
        while streak < 20 and time.monotonic() < deadline:  # every worker reloaded (each on its own)
            streak = streak + 1 if get(f"http://127.0.0.1:{port}/goods")[0] == 200 else 0
        assert streak == 20

        # graceful shutdown: an in-flight slow request (2 s upstream) completes
        result: dict[str, int] = {}
        thread = threading.Thread(target=lambda: result.update(status=get(f"http://127.0.0.1:{port}/slow")[0]))
        thread.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        thread.join(10)
        assert result.get("status") == 200
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_an_invalid_config(tmp_path):
    path = write_config(tmp_path, 8080, 9901, 9000).read_text().replace("class: open", "class: closed")
    (tmp_path / "b.yaml").write_text(path)
    result = run("serve", "-c", str(tmp_path / "b.yaml"))
    assert result.returncode == 1 and "unknown class 'closed'" in result.stderr


def test_reload_reports_unreachable_admin(tmp_path):
    path = write_config(tmp_path, 8080, free_port(), 9000)
    result = run("reload", "-c", str(path))
    assert result.returncode == 1 and "cannot reach the admin listener" in result.stderr


os.environ.setdefault("PYTHONUNBUFFERED", "1")


def test_blocks_from_the_command_line(tmp_path, upstream):
    port, admin = free_port(), free_port()
    path = write_config(tmp_path, port, admin, upstream)
    proc = subprocess.Popen([*BASTION, "serve", "-c", str(path)])
    try:
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        assert run("blocks", "add", "ip", "127.0.0.1", "--seconds", "60", "-c", str(path)).returncode == 0
        assert get(f"http://127.0.0.1:{port}/items")[0] == 403
        listed = run("blocks", "list", "-c", str(path))
        assert listed.returncode == 0 and "127.0.0.1" in listed.stdout
        assert run("blocks", "lift", "ip", "127.0.0.1", "-c", str(path)).returncode == 0
        assert get(f"http://127.0.0.1:{port}/items")[0] == 200
        assert run("blocks", "add", "-c", str(path)).returncode == 2
    finally:
        proc.terminate()
        proc.wait(10)


def test_version_flag_and_a_closed_pipe() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("bastion ")
    # `bastion explain ... | head -1`: the reader leaves early; no traceback
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "bastion.yaml"
    proc = subprocess.Popen([*BASTION, "explain", "-c", str(example)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=30)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_serve_names_a_missing_certificate_at_its_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, free_port(), free_port(), 9000)
    path.write_text(path.read_text().replace("admin: {", "admin: {tls: {cert: gw.pem, key: gw.key}, "))
    result = run("serve", "-c", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{path}:5:17: gateway.admin.tls.cert: file not found" in result.stderr
    (tmp_path / "gw.pem").write_text("not a certificate")  # there, but broken: validate says so at its line
    (tmp_path / "gw.key").write_text("not a key")
    result = run("validate", "-c", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{path}:5:17: gateway.admin.tls.cert: {tmp_path / 'gw.pem'} is not a usable PEM certificate" \
        in result.stderr
    assert "gateway.admin.tls.key: " in result.stderr


def test_reload_of_another_file_is_refused_not_reported_as_done(tmp_path: Path, upstream: int) -> None:
    port, admin = free_port(), free_port()
    path = write_config(tmp_path, port, admin, upstream)
    other = tmp_path / "other"
    other.mkdir()
    (other / "bastion.yaml").write_text(path.read_text().replace("/items", "/things"))
    proc = subprocess.Popen([*BASTION, "serve", "-c", str(path)])
    try:
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        refused = run("reload", "-c", str(other / "bastion.yaml"))
        assert refused.returncode == 1 and f"the gateway serves {path}" in refused.stderr
        assert get(f"http://127.0.0.1:{port}/items")[0] == 200  # nothing was reloaded
        done = run("reload", "-c", str(path))
        assert done.returncode == 0 and json.loads(done.stdout)["reloaded"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
