"""Secrets by reference: `{env: NAME}` and `{file: PATH}` in every secret field, re-read on reload, and never
shown by validate, explain, /config, the audit log or an error message."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bastion.config.loader import ConfigError, load_config
from bastion.config.secrets import SecretRef, secret_values
from bastion.server.app import Runtime
from bastion.state import open_state
from bastion.state.redis_state import RedisState
from tests.helpers import request, upstream_server

ADMIN_TOKEN = "Adm1n-t0ken-from-a-file-4c1e"
ADMIN_TOKEN_2 = "Adm1n-t0ken-rotated-99a0"
CLIENT_SECRET = "Intr0spection-client-secret-77d2"
SSF_AUTH = "Bearer ssf-push-auth-5b3e"
HEC_TOKEN = "Hec-t0ken-0a9b"
HMAC_KEY = "hmac-shared-key-of-32-bytes-long!"
REDIS_PASSWORD = "Red1s-pa55word-e6f0"
LITERAL = "L1teral-secret-pasted-by-mistake"
SECRETS = (ADMIN_TOKEN, ADMIN_TOKEN_2, CLIENT_SECRET, SSF_AUTH, HEC_TOKEN, HMAC_KEY, REDIS_PASSWORD, LITERAL)

CONFIG = """
version: 1
gateway:
  listeners: [{{address: 127.0.0.1, port: 0}}]
  admin:
    address: 127.0.0.1
    port: 0
    auth: {{tokens: [{{file: secrets/admin-token}}]}}
  audit:
    sinks:
      - {{type: file, path: audit.jsonl}}
      - {{name: hec, type: http, url: "http://127.0.0.1:9/collector", token: {{env: T_HEC_TOKEN}}}}
  state_password: {{env: T_REDIS_PASSWORD}}
classes:
  open: {{identity: {{required: false, methods: []}}}}
providers:
  jwt:
    - {{name: hs, issuer: https://hs.example, audiences: [api], algorithms: [HS256], hmac_key: {{env: T_HMAC}}}}
  introspection:
    - name: corp
      endpoint: https://idp.example/introspect
      client_id: bastion
      client_secret: {{file: {secret_dir}/client-secret}}
  ssf:
    - {{name: caep, issuer: https://idp.example, audience: [https://gw], jwks_uri: https://idp.example/jwks,
       authorization: {{env: T_SSF_AUTH}}}}
apis:
  - name: shop
    owner: o@example.com
    class: open
    upstream: {upstream}
    routes: [{{name: items, path: /items, methods: [GET]}}]
"""

ENV = {"T_HEC_TOKEN": HEC_TOKEN, "T_REDIS_PASSWORD": REDIS_PASSWORD, "T_HMAC": HMAC_KEY, "T_SSF_AUTH": SSF_AUTH}


def write(tmp_path: Path, upstream: str = "http://127.0.0.1:9") -> Path:
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "admin-token").write_text(ADMIN_TOKEN + "\n")
    (tmp_path / "secrets" / "client-secret").write_text(CLIENT_SECRET)
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(upstream=upstream, secret_dir=tmp_path / "secrets")))
    return path


@pytest.fixture
def env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def test_every_reference_is_loaded(tmp_path, env):
    loaded = load_config(write(tmp_path))
    assert sorted(secret_values(loaded.model)) == sorted([ADMIN_TOKEN, CLIENT_SECRET, SSF_AUTH, HEC_TOKEN, HMAC_KEY,
                                                          REDIS_PASSWORD])
    dumped = json.dumps(loaded.model.model_dump(mode="json", by_alias=True)) + repr(loaded.model)
    assert not [s for s in SECRETS if s in dumped]
    assert "T_HMAC" in dumped and "secrets/admin-token" in dumped  # where it comes from is shown


@pytest.mark.parametrize(("change", "line", "message"), [
    ("unset", 13, "environment variable T_REDIS_PASSWORD is not set"),
    ("no_file", 8, "cannot be read"),
    ("empty_file", 8, "empty"),
])
def test_an_unreadable_secret_is_an_error_at_its_line(tmp_path, env, monkeypatch, change, line, message):
    path = write(tmp_path)
    if change == "unset":
        monkeypatch.delenv("T_REDIS_PASSWORD")
    elif change == "no_file":
        (tmp_path / "secrets" / "admin-token").unlink()
    else:
        (tmp_path / "secrets" / "admin-token").write_text("  \n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [diag] = info.value.diagnostics
    assert diag.line == line and message in diag.message
    assert not [s for s in SECRETS if s in str(info.value)]


@pytest.mark.parametrize("value", [
    {}, {"env": "A", "file": "b"}, {"env": "not a name"}, {"value": LITERAL},
])
def test_a_reference_is_env_or_file(value):
    with pytest.raises(ValueError) as info:
        SecretRef.model_validate(value)
    assert LITERAL not in str(info.value)


def test_a_literal_where_a_reference_belongs_is_refused_without_echo(tmp_path, env):
    path = write(tmp_path)
    path.write_text(path.read_text().replace("token: {env: T_HEC_TOKEN}", f"token: {LITERAL}"))
    result = subprocess.run([sys.executable, "-m", "bastion", "validate", "-c", str(path)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, **ENV})
    assert result.returncode == 1 and "token" in result.stdout + result.stderr
    assert LITERAL not in result.stdout + result.stderr


def test_validate_and_explain_never_show_a_secret(tmp_path, env):
    path = write(tmp_path)
    outputs = []
    for args in (["validate", "-c", str(path)], ["explain", "-c", str(path), "--json"]):
        result = subprocess.run([sys.executable, "-m", "bastion", *args], capture_output=True, text=True,
                                timeout=60, env={**os.environ, **ENV})
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout + result.stderr)
    assert "shop/items" in outputs[1]
    assert not [s for s in SECRETS if s in "".join(outputs)]


async def test_running_gateway_rereads_files_on_reload_and_leaks_nothing(tmp_path, env):
    async with upstream_server() as up:
        path = write(tmp_path, f"http://127.0.0.1:{up}")
        runtime = Runtime(path)
        runtime.services.state = open_state("memory")  # Redis itself is tested below
        await runtime.start()
        try:
            admin = runtime.admin_bound[1]
            first = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            status, _, config = await request(admin, "GET", "/config", first)
            assert status == 200
            assert (await request(runtime.bound[0][1], "GET", "/items"))[0] == 200
            # rotate the admin token file; a reload reads it again
            (tmp_path / "secrets" / "admin-token").write_text(ADMIN_TOKEN_2)
            status, _, reload_body = await request(admin, "POST", "/reload", first)
            assert status == 200
            assert (await request(admin, "GET", "/config", first))[0] == 401
            second = {"Authorization": f"Bearer {ADMIN_TOKEN_2}"}
            status, _, policies = await request(admin, "GET", "/policies", second)
            assert status == 200
            # a reload that fails on a missing variable says which one, and keeps the running config
            os.environ.pop("T_SSF_AUTH")
            status, _, failed = await request(admin, "POST", "/reload", second)
            assert status == 422 and b"T_SSF_AUTH" in failed
            status, _, metrics = await request(admin, "GET", "/metrics", second)
        finally:
            await runtime.stop(drain_timeout=0.5)
    await asyncio.sleep(0)
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "config.reload" in audit and "T_SSF_AUTH" in audit
    seen = b"".join([config, reload_body, policies, failed, metrics]).decode() + audit
    assert not [s for s in SECRETS if s in seen]


def _redis_require_password(port: int, password: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(f"CONFIG SET requirepass {password}\r\n".encode())
        assert sock.recv(64).startswith(b"+OK")


async def test_redis_password_by_reference(redis_server, tmp_path, env):
    _redis_require_password(redis_server.port, REDIS_PASSWORD)
    model = load_config(write(tmp_path)).model
    good = open_state(redis_server.url, model.gateway.state_password.value())
    bad = RedisState(redis_server.url)
    try:
        assert await good.is_blocked("ip", "192.0.2.1") is None  # authenticated: answers
        with pytest.raises(Exception) as info:
            await bad.is_blocked("ip", "192.0.2.1")
        assert REDIS_PASSWORD not in str(info.value)
    finally:
        await good.close()
        await bad.close()


async def test_a_listener_key_by_reference_serves_tls_and_leaves_no_file(tmp_path, monkeypatch):
    import glob
    import ssl

    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    (tmp_path / "gw.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key_pem = leaf.private_key_pem.bytes().decode()
    monkeypatch.setenv("T_TLS_KEY", key_pem)
    before = set(glob.glob("/dev/shm/bastion-key-*")) | set(glob.glob("/tmp/bastion-key-*"))
    async with upstream_server() as up:
        path = tmp_path / "bastion.yaml"
        path.write_text(textwrap.dedent(f"""
            version: 1
            gateway:
              listeners: [{{address: 127.0.0.1, port: 0, tls: {{cert: gw.pem, key: {{env: T_TLS_KEY}}}}}}]
              admin: {{enabled: false, port: 0}}
            classes:
              open: {{identity: {{required: false, methods: []}}}}
            apis:
              - {{name: shop, owner: o@example.com, class: open, upstream: "http://127.0.0.1:{up}",
                 routes: [{{name: items, path: /items, methods: [GET]}}]}}
            """))
        runtime = Runtime(path)
        await runtime.start()
        try:
            client = ssl.create_default_context()
            ca.configure_trust(client)
            reader, writer = await asyncio.open_connection("127.0.0.1", runtime.bound[0][1], ssl=client)
            writer.write(b"GET /items HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200")
            assert (await runtime.reload())[0]  # the key is read again, and still serves
        finally:
            await runtime.stop(drain_timeout=0.5)
    after = set(glob.glob("/dev/shm/bastion-key-*")) | set(glob.glob("/tmp/bastion-key-*"))
    assert after <= before  # the key's private file is gone
    assert key_pem.splitlines()[1] not in json.dumps(load_config(path).model.model_dump(mode="json"))
