"""A live reload re-checks every file the config refers to: a missing or broken certificate, key, CA bundle,
JWKS or OpenAPI file refuses the reload at the `file:line` of its reference, and the previous config keeps
serving (real TLS listener with trustme certificates, real admin listener, real upstream)."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Callable
from pathlib import Path

import trustme
from joserfc.jwk import ECKey

from bastion.config.loader import load_config
from bastion.posture.tokens import TokenForge
from bastion.server.reload_files import broken_files
from tests.helpers import parse_response, request, running_gateway

CONFIG = """
version: 1
gateway:
  listeners:
    - address: 127.0.0.1
      port: 0
      tls: {cert: gw.pem, key: gw.key, client_ca: ca.pem, client_cert: optional}
  admin: {address: 127.0.0.1, port: 0}
classes:
  internal: {identity: {required: true, methods: [jwt]}}
providers:
  jwt:
    - {name: local, issuer: "urn:test", audiences: [api://t], algorithms: [ES256], jwks_file: KEYS}
apis:
  - name: inside
    owner: a@example.com
    class: internal
    upstream: "{upstream}"
    openapi: api.yaml
"""
OPENAPI = """openapi: 3.1.0
info: {title: inside, version: "1"}
paths:
  /x:
    get: {operationId: getX, responses: {"200": {description: ok}}}
"""
# the line of each reference in CONFIG as written to disk (dedented, first line empty)
LINES = {"cert": 7, "key": 7, "client_ca": 7, "jwks_file": 13, "openapi": 19}


def _files(tmp_path: Path) -> tuple[trustme.CA, ECKey]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(tmp_path / "gw.pem")
    server.private_key_pem.write_to_path(tmp_path / "gw.key")
    key = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256"}, private=True)
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    (tmp_path / "api.yaml").write_text(OPENAPI)
    return ca, key


def _remove(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda d: (d / name).write_text(text)


BREAKAGES = [
    # (what breaks, the field named in the refusal, the reason)
    (_remove("gw.pem"), "gateway.listeners[0].tls.cert", "file not found"),
    (_write("gw.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
     "gateway.listeners[0].tls.cert", "not a usable PEM certificate"),
    (_write("gw.key", "not a key"), "gateway.listeners[0].tls.key", "not a usable PEM private key"),
    (_remove("ca.pem"), "gateway.listeners[0].tls.client_ca", "file not found"),
    (_write("ca.pem", ""), "gateway.listeners[0].tls.client_ca", "not a usable CA bundle"),
    (_remove("keys.json"), "providers.jwt[0].jwks_file", "file not found"),
    (_write("keys.json", '{"keys": "none"}'), "providers.jwt[0].jwks_file", "not a usable JWKS"),
    (_write("api.yaml", "openapi: 2.0\n"), "apis[0].openapi", "not a usable OpenAPI document"),
    (_remove("api.yaml"), "apis[0].openapi", "file not found"),
]


async def _get(port: int, ca: trustme.CA, headers: dict[str, str]) -> int:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="127.0.0.1")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET /x HTTP/1.1\r\nHost: gw\r\n{extra}Connection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    return parse_response(data)[0]


async def test_a_reload_with_a_broken_referenced_file_is_refused_at_its_line(tmp_path: Path) -> None:
    ca, key = _files(tmp_path)
    token = {"Authorization": "Bearer " + TokenForge("urn:test", "api://t", key, subject="svc").valid()}
    # absolute: the identity layer opens a relative jwks_file from the working directory, not the config's
    async with running_gateway(tmp_path, CONFIG.replace("KEYS", str(tmp_path / "keys.json"))) as gw:
        assert gw.admin_bound is not None
        port, admin = gw.bound[0][1], gw.admin_bound[1]
        assert await _get(port, ca, token) == 200
        serving = gw.gateway.compiled.config_hash
        for breakage, field, reason in BREAKAGES:
            saved = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
            breakage(tmp_path)
            status, _, body = await request(admin, "POST", "/reload")
            answer = json.loads(body)
            assert status == 422 and not answer["reloaded"], (field, answer)
            where = re.search(rf"bastion\.yaml:(\d+):\d+: {re.escape(field)}: (.*)", answer["message"])
            assert where is not None, (field, answer["message"])
            assert int(where.group(1)) == LINES[field.rsplit(".", 1)[-1]] and reason in where.group(2), answer
            assert gw.gateway.compiled.config_hash == serving
            assert await _get(port, ca, token) == 200, field  # the old config, certificate and keys serve on
            for name, data in saved.items():
                (tmp_path / name).write_bytes(data)
        status, _, body = await request(admin, "POST", "/reload")  # every file repaired: accepted
        assert status == 200, body


def test_broken_files_checks_only_what_the_field_expects(tmp_path: Path) -> None:
    """A file of another kind (a Cedar policy, a GeoIP database) is only checked for existence."""
    _files(tmp_path)
    (tmp_path / "bastion.yaml").write_text(CONFIG.replace('"{upstream}"', "http://127.0.0.1:9")
                                           .replace("KEYS", "keys.json"))
    assert broken_files(load_config(tmp_path / "bastion.yaml")) == []
    (tmp_path / "gw.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    [diagnostic] = broken_files(load_config(tmp_path / "bastion.yaml"))
    assert (diagnostic.line, diagnostic.field) == (7, "gateway.listeners[0].tls.key")
