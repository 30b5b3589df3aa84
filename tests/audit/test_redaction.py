"""Secrets never reach a sink: a real gateway gets tokens, API keys and cookies; the sink output is grepped."""

from __future__ import annotations

import json
import time

from joserfc import jwt
from joserfc.jwk import ECKey

from bastion.stages.identity.consumers import hash_key
from tests.helpers import request, running_gateway

ISSUER = "https://idp.redaction.test"
KEY_ID = "kredact01"
API_KEY = f"bsk_{KEY_ID}_Zq8vT3mN5pR7sW9xY1aB4cD6eF"
WRONG_KEY = f"bsk_{KEY_ID}_WrongWrongWrongWrongWrong42"
COOKIE = "session=SessCookieValue-7f3a9"

CONFIG = """
version: 1
gateway:
  listeners: [{{address: 127.0.0.1, port: 0}}]
  admin: {{enabled: false}}
  audit:
    sinks:
      - {{type: file, path: audit.jsonl}}
      - {{type: file, path: audit-ecs.jsonl, format: ecs}}
classes:
  partner:
    identity: {{required: true, methods: [jwt, api_key]}}
providers:
  jwt:
    - {{name: corp, issuer: "{issuer}", audiences: ["api://orders"], algorithms: [ES256], jwks_file: "{jwks}"}}
consumers:
  - name: billing
    credentials:
      - {{type: api_key, id: "{key_id}", key_sha256: "{key_hash}"}}
apis:
  - name: orders
    owner: team-orders@example.com
    class: partner
    upstream: {{upstream}}
    routes:
      - {{name: get-order, path: "/orders/{{order_id}}", methods: [GET, POST]}}
"""


def _token(key: ECKey, **overrides: object) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "api://orders", "sub": "alice", "iat": now, "exp": now + 300,
              "jti": "jti-redaction-1", **overrides}
    return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}, claims, key)


async def test_tokens_keys_and_cookies_never_reach_the_sinks(tmp_path):
    key = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256"})
    forger = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    good = _token(key)
    forged = _token(forger, sub="mallory", jti="jti-forged")
    expired = _token(key, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200, jti="jti-old")
    config = CONFIG.format(issuer=ISSUER, jwks=jwks, key_id=KEY_ID, key_hash=hash_key(API_KEY))
    async with running_gateway(tmp_path, config) as gw:
        port = gw.bound[0][1]
        calls = [
            ({"Authorization": f"Bearer {good}", "Cookie": COOKIE}, "/orders/1", 200),
            ({"Authorization": f"Bearer {forged}", "Cookie": COOKIE}, "/orders/2", 401),
            ({"Authorization": f"Bearer {expired}"}, "/orders/3", 401),
            ({"X-Api-Key": API_KEY, "Cookie": COOKIE}, "/orders/4", 200),
            ({"X-Api-Key": WRONG_KEY}, "/orders/5", 401),
            ({}, f"/orders/6?access_token={good}&api_key={API_KEY}", 400),
            ({"Authorization": f"Basic {API_KEY}"}, "/orders/7", 401),
        ]
        for headers, target, expected in calls:
            status, _, _ = await request(port, "GET", target, headers)
            assert status == expected, (target, status)
    secrets = [good, forged, expired, API_KEY, WRONG_KEY, "SessCookieValue-7f3a9", "Zq8vT3mN5pR7sW9xY1aB4cD6eF",
               "WrongWrongWrongWrongWrong42"]
    secrets += [t.rsplit(".", 1)[1] for t in (good, forged, expired)]  # signatures alone
    for name in ("audit.jsonl", "audit-ecs.jsonl"):
        text = (tmp_path / name).read_text()
        for secret in secrets:
            assert secret not in text, (name, secret[:12])
        events = [json.loads(line) for line in text.splitlines()]
        assert len([e for e in events if "request_id" in json.dumps(e)]) >= len(calls)
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    by_path = {e["http_request"]["url"]["path"]: e for e in events if "http_request" in e}
    assert by_path["/orders/1"]["unmapped"]["bastion"]["credential_id"] == "jti-redaction-1"  # the jti, not the token
    assert by_path["/orders/4"]["unmapped"]["bastion"]["credential_id"] == KEY_ID  # the key id, not the key
    assert by_path["/orders/2"]["class_uid"] == 3002
    assert by_path["/orders/2"]["status_detail"] in ("jwt_bad_signature", "jwt_unknown_kid")
    assert by_path["/orders/5"]["status_detail"] == "api_key_invalid"
