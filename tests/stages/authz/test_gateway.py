"""Authorisation through a running gateway: compiled from YAML, answered as RFC 9457 problems over a socket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.config.loader import ConfigError
from bastion.stages.identity import new_api_key
from tests.helpers import request, running_gateway

CONFIG = """
version: 1
gateway:
  listeners: [{port: 0}]
  admin: {enabled: false, port: 0}
consumers:
  - name: teller
    roles: [clerk]
    credentials:
      {teller}
  - name: ops
    roles: [platform-admin]
    credentials:
      {ops}
classes:
  partner:
    identity: {required: true, methods: [api_key]}
    authz:
      require_owner: true
      admin_roles: [platform-admin]
apis:
  - name: bank
    owner: team@example.com
    class: partner
    upstream: {upstream}
    base_path: /bank
    routes:
      - name: get-account
        path: /accounts/{account_id}
        methods: [GET]
        policy:
          authz:
            roles: {any_of: [clerk]}
            owner: {from: path.account_id, equals: consumer}
            conditions: {office-hours: "method == 'GET'"}
      - name: purge
        path: /admin/purge
        methods: [POST]
        policy: {authz: {administrative: true}}
"""


def config() -> tuple[str, dict[str, str]]:
    """The YAML with two fresh API keys, and the keys by consumer."""
    teller_key, teller = new_api_key("teller")
    ops_key, ops = new_api_key("ops")
    text = CONFIG.replace("{teller}", teller.split("  #")[0]).replace("{ops}", ops.split("  #")[0])
    return text, {"teller": teller_key, "ops": ops_key}


async def test_owner_roles_and_admin_routes_through_the_gateway(tmp_path: Path) -> None:
    text, keys = config()
    async with running_gateway(tmp_path, text) as gw:
        port = gw.bound[0][1]
        teller = {"x-api-key": keys["teller"]}
        status, _, _ = await request(port, "GET", "/bank/accounts/teller", teller)
        assert status == 200
        for other in ("ops", "alice", "teller2"):  # other objects: always refused, detail says nothing more
            status, headers, body = await request(port, "GET", f"/bank/accounts/{other}", teller)
            problem = json.loads(body)
            assert status == 403 and headers["content-type"].startswith("application/problem+json")
            assert problem["detail"] == "The caller may not access this object."
            assert other not in body.decode()
        status, _, _ = await request(port, "GET", "/bank/accounts/ops", {"x-api-key": keys["ops"]})
        assert status == 403  # owner, but no clerk role
        status, _, _ = await request(port, "POST", "/bank/admin/purge", teller)
        assert status == 403
        status, _, _ = await request(port, "POST", "/bank/admin/purge", {"x-api-key": keys["ops"]})
        assert status == 200


def test_require_owner_names_the_route_without_a_rule(tmp_path: Path) -> None:
    from bastion.compile import compile_config
    from bastion.config.loader import load_config

    text = config()[0].replace("owner: {from: path.account_id, equals: consumer}", "")
    path = tmp_path / "bastion.yaml"
    path.write_text(text.replace("{upstream}", "http://127.0.0.1:9"))
    with pytest.raises(ConfigError) as err:
        compile_config(load_config(path))
    assert "bank/get-account (/bank/accounts/{account_id}) takes an object id" in str(err.value)
