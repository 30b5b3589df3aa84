"""Response controls through the running gateway: contract stripping, 5xx rewriting, security headers, CORS."""

from __future__ import annotations

import json

from tests.helpers import LOOPBACK_GATEWAY, request, running_gateway

SPEC = """
openapi: 3.0.3
info: {title: echo, version: "1"}
paths:
  /echo:
    get:
      operationId: echo
      responses:
        "200":
          description: what reached the upstream, as far as clients may know
          content:
            application/json:
              schema:
                type: object
                properties:
                  service: {type: string}
                  method: {type: string}
  /fail:
    get:
      operationId: fail
      responses: {"500": {description: broken}}
"""

CONFIG = LOOPBACK_GATEWAY + """
classes:
  public:
    identity: {required: false, methods: []}
    input: {contract: enforce, inspection: block}
    response:
      undeclared: UNDECLARED
      cors: {allow_origins: ["https://app.example.com"], allow_methods: [GET]}
apis:
  - name: echo
    owner: team-echo@example.com
    class: public
    upstream: {upstream}
    openapi: echo.yaml
"""


async def test_undeclared_response_fields_are_stripped_and_errors_rewritten(tmp_path):
    (tmp_path / "echo.yaml").write_text(SPEC)
    async with running_gateway(tmp_path, CONFIG.replace("UNDECLARED", "strip")) as gw:
        port = gw.bound[0][1]
        status, headers, body = await request(port, "GET", "/echo")
        assert status == 200
        assert json.loads(body) == {"service": "demo-upstream", "method": "GET"}  # target, headers: stripped
        assert headers["x-content-type-options"] == "nosniff"
        assert "server" not in headers and "x-powered-by" not in headers
        assert "strict-transport-security" not in headers  # plaintext: no HSTS

        status, headers, body = await request(port, "GET", "/fail")
        assert status == 500 and headers["content-type"] == "application/problem+json"
        assert b"Traceback" not in body and b"db.internal" not in body and b"hunter2" not in body
        assert json.loads(body)["request_id"] == headers["x-request-id"]


async def test_block_mode_refuses_a_response_outside_the_contract(tmp_path):
    (tmp_path / "echo.yaml").write_text(SPEC.replace("type: object\n", "type: object\n                additionalProperties: false\n", 1))
    async with running_gateway(tmp_path, CONFIG.replace("UNDECLARED", "block")) as gw:
        status, headers, body = await request(gw.bound[0][1], "GET", "/echo")
        assert status == 502 and headers["content-type"] == "application/problem+json"
        assert b"demo-upstream" not in body


async def test_cors_preflight_is_answered_by_the_gateway(tmp_path):
    (tmp_path / "echo.yaml").write_text(SPEC)
    async with running_gateway(tmp_path, CONFIG.replace("UNDECLARED", "strip")) as gw:
        port = gw.bound[0][1]
        asked = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
        status, headers, body = await request(port, "OPTIONS", "/echo", asked)
        assert status == 204 and body == b""
        assert headers["access-control-allow-origin"] == "https://app.example.com"
        assert "GET" in headers["access-control-allow-methods"]
        status, headers, _ = await request(port, "OPTIONS", "/echo", {**asked, "Origin": "https://evil.example"})
        assert status == 403 and "access-control-allow-origin" not in headers
        status, headers, _ = await request(port, "GET", "/echo", {"Origin": "https://app.example.com"})
        assert status == 200 and headers["access-control-allow-origin"] == "https://app.example.com"
        assert "origin" in headers["vary"].lower()
