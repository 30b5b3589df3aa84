"""Reload applies every section or refuses naming the field: the rules, live limits, and `validate --against`."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bastion.config.models import GatewayConfig
from bastion.server.reload import restart_needed
from tests.helpers import request, running_gateway

BASE = {"listeners": [{"address": "127.0.0.1", "port": 8080}], "admin": {"port": 9901}}


@pytest.mark.parametrize(("change", "field"), [
    ({"limits": {"max_header_bytes": 1024}}, None),  # applied live
    ({"trusted_proxies": ["10.0.0.0/8"]}, None),
    ({"audit": {"detections": {"credential_stuffing": {"threshold": 2}}}}, None),
    ({"listeners": [{"address": "127.0.0.1", "port": 8081}]}, "gateway.listeners[0].port"),
    ({"listeners": [{"address": "127.0.0.1", "port": 8080}, {"address": "127.0.0.1", "port": 8081}]},
     "gateway.listeners"),
    ({"listeners": [{"address": "127.0.0.1", "port": 8080, "h2c": True}]}, "gateway.listeners[0].h2c"),
    ({"admin": {"port": 9902}}, "gateway.admin.port"),
    ({"workers": 4}, "gateway.workers"),
    ({"state": "redis://127.0.0.1:6379/0"}, None),  # swapped at commit (bastion.server.swap)
    ({"audit": {"sinks": [{"type": "stdout"}]}}, None),
    ({"audit": {"spool_dir": "/var/spool/other", "spool_max_bytes": "10MiB", "queue_size": 64}}, None),
    ({"state_password": {"env": "REDIS_PASSWORD"}}, None),
    ({"limits": {"upstream_pool_size": 8}}, "gateway.limits.upstream_pool_size"),
    ({"limits": {"max_upstream_head_bytes": 1024}}, "gateway.limits.max_upstream_head_bytes"),
    ({"limits": {"max_rate_limit_keys": 1000}}, "gateway.limits.max_rate_limit_keys"),
    ({"tracing": {"endpoint": "http://127.0.0.1:4318/v1/traces"}}, None),
])
def test_what_a_reload_applies_and_what_needs_a_restart(change, field):
    old = GatewayConfig.model_validate(BASE)
    new = GatewayConfig.model_validate({**BASE, **change})
    refusal = restart_needed(old, new)
    if field is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.startswith(f"{field} ") and "needs a restart" in refusal


def test_http2_listeners_refuse_live_header_limits():
    h2 = {**BASE, "listeners": [{"address": "127.0.0.1", "port": 8080, "h2c": True}]}
    refusal = restart_needed(GatewayConfig.model_validate(h2),
                             GatewayConfig.model_validate({**h2, "limits": {"max_header_bytes": 1024}}))
    assert refusal is not None and refusal.startswith("gateway.limits.max_header_bytes changed")


CONFIG = """
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
  admin: {address: 127.0.0.1, port: 0}
  limits: {max_header_bytes: 16384}
classes:
  open: {identity: {required: false}}
apis:
  - name: shop
    owner: team-shop@example.com
    class: open
    upstream: "{upstream}"
    routes: [{name: items, path: /items, methods: [GET]}]
"""


async def test_a_lowered_header_limit_applies_after_reload_and_a_new_port_is_refused(tmp_path):
    async with running_gateway(tmp_path, CONFIG) as gw:
        port, admin = gw.bound[0][1], gw.admin_bound[1]
        big = {"x-filler": "a" * 4000}
        assert (await request(port, "GET", "/items", big))[0] == 200
        path = tmp_path / "bastion.yaml"
        path.write_text(path.read_text().replace("max_header_bytes: 16384", "max_header_bytes: 1024"))
        status, _, body = await request(admin, "POST", "/reload")
        assert status == 200, body
        assert (await request(port, "GET", "/items", big))[0] == 431  # the example: now refused
        hash_before = gw.gateway.compiled.config_hash
        path.write_text(path.read_text().replace("port: 0}]", "port: 1}]"))
        status, _, body = await request(admin, "POST", "/reload")
        assert status == 422 and b"gateway.listeners[0].port changed: needs a restart" in body
        assert gw.gateway.compiled.config_hash == hash_before

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bastion", "validate", "-c", str(path), "--against",
            f"http://127.0.0.1:{admin}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 1 and b"gateway.listeners[0].port changed: needs a restart" in err
        path.write_text(path.read_text().replace("port: 1}]", "port: 0}]"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bastion", "validate", "-c", str(path), "--against",
            f"http://127.0.0.1:{admin}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0 and b'"applies_live":true' in out
