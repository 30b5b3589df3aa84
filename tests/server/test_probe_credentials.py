"""`POST /probe/credentials`: a short-lived probe key, registered only with admin auth, audited, and trusted on
the data plane until its registration expires by itself. A real gateway, real admin listener, real upstream."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from joserfc.jwk import ECKey

from bastion.posture.tokens import TokenForge
from bastion.stages.identity.registered import kid_for
from tests.helpers import request, running_gateway

TOKEN = "admin-token-for-tests-only"
CONFIG = f"""
version: 1
gateway:
  listeners: [{{address: 127.0.0.1, port: 0}}]
  admin:
    address: 127.0.0.1
    port: 0
    auth: {{token_sha256: [{hashlib.sha256(TOKEN.encode()).hexdigest()}]}}
  audit: {{sinks: [{{type: file, path: audit.jsonl}}]}}
classes:
  partner:
    identity: {{required: true, methods: [jwt]}}
providers:
  jwt:
    - {{name: bastion-probe, issuer: "urn:bastion:probe", audiences: [api://demo], algorithms: [ES256],
       max_lifetime: 5m, registered_keys: {{max_ttl: 60s}}}}
apis:
  - {{name: orders, owner: o@example.com, class: partner, upstream: "{{upstream}}",
     routes: [{{name: get, path: "/orders/{{id}}", methods: [GET]}}]}}
"""
ADMIN = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def _key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"alg": "ES256"}, private=True)


def _bearer(key: ECKey) -> dict[str, str]:
    signing = ECKey.import_key(key.as_dict(private=True), parameters={"kid": kid_for(key), "alg": "ES256"})
    return {"Authorization": "Bearer " + TokenForge("urn:bastion:probe", "api://demo", signing).valid()}


async def _register(admin: int, doc: dict, headers: dict[str, str] = ADMIN) -> tuple[int, dict]:
    status, _, body = await request(admin, "POST", "/probe/credentials", headers, json.dumps(doc).encode())
    return status, json.loads(body)


async def test_registration_needs_admin_auth_is_audited_and_trusted_on_the_data_plane(tmp_path: Path) -> None:
    key = _key()
    public = key.as_dict(private=False)
    async with running_gateway(tmp_path, CONFIG) as gw:
        assert gw.admin_bound is not None
        port, admin = gw.bound[0][1], gw.admin_bound[1]
        assert (await request(port, "GET", "/orders/1", _bearer(key)))[0] == 401  # not registered yet
        status, _ = await _register(admin, {"public_jwk": public, "ttl_seconds": 30},
                                    {"Content-Type": "application/json"})
        assert status == 401  # no admin credential: nothing registered
        assert (await request(port, "GET", "/orders/1", _bearer(key)))[0] == 401
        status, answer = await _register(admin, {"public_jwk": public, "ttl_seconds": 30})
        assert status == 200, answer
        assert (answer["provider"], answer["issuer"], answer["audience"], answer["kid"]) == (
            "bastion-probe", "urn:bastion:probe", "api://demo", kid_for(key))
        assert 29 < answer["expires"] - gw.services.wall_clock() <= 30
        assert (await request(port, "GET", "/orders/1", _bearer(key)))[0] == 200
        assert (await request(port, "GET", "/orders/1", _bearer(_key())))[0] == 401  # another key: untrusted
        refused = [
            {"public_jwk": public, "ttl_seconds": 61},  # past max_ttl
            {"public_jwk": public, "ttl_seconds": 0},
            {"public_jwk": public, "ttl_seconds": "30"},
            {"public_jwk": key.as_dict(private=True)},  # the private half must never travel
            {"public_jwk": {**public, "crv": "P-384"}},
            {"public_jwk": {**public, "x": public["y"]}},  # not a point on the curve
            {"public_jwk": public, "provider": "nope"},
        ]
        for doc in refused:
            status, problem = await _register(admin, doc)
            assert status == 400 and problem["status"] == 400, doc
        await gw.services.audit.close()  # flush the queue to the file before reading it back
        await gw.services.audit.start()
    events = [json.loads(line)["unmapped"]["bastion"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    admin_events = [e for e in events if e.get("admin_action") == "admin.POST /probe/credentials"]
    assert [e["outcome"] for e in admin_events] == ["failure", "success", *["failure"] * len(refused)]
    granted = admin_events[1]
    assert granted["principal"] == f"static-token:{hashlib.sha256(TOKEN.encode()).hexdigest()[:12]}"  # who asked
    assert granted["probe_credential"]["kid"] == kid_for(key)
    assert granted["probe_credential"]["expires"] == answer["expires"]


async def test_a_registered_key_expires_by_itself_even_for_a_cached_token(tmp_path: Path) -> None:
    key = _key()
    async with running_gateway(tmp_path, CONFIG) as gw:
        assert gw.admin_bound is not None
        port, admin = gw.bound[0][1], gw.admin_bound[1]
        status, answer = await _register(admin, {"public_jwk": key.as_dict(private=False), "ttl_seconds": 1})
        assert status == 200, answer
        bearer = _bearer(key)  # valid for 5 minutes: it must still stop working with its key
        assert (await request(port, "GET", "/orders/1", bearer))[0] == 200  # verified, and now cached
        await asyncio.sleep(max(0.0, answer["expires"] - gw.services.wall_clock()) + 0.05)
        status, headers, _ = await request(port, "GET", "/orders/1", bearer)
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]


async def test_without_a_registered_keys_provider_there_is_nothing_to_register(tmp_path: Path) -> None:
    config = CONFIG.replace("max_lifetime: 5m, registered_keys: {max_ttl: 60s}", "jwks_uri: http://127.0.0.1:9/jwks")
    async with running_gateway(tmp_path, config) as gw:
        assert gw.admin_bound is not None
        status, _ = await _register(gw.admin_bound[1], {"public_jwk": _key().as_dict(private=False)})
        assert status == 404


def test_a_key_registered_at_the_supervisor_is_trusted_by_every_worker(tmp_path: Path) -> None:
    """`--workers 2` as a real process tree: the registration lives in the supervisor's shared state, so both
    workers accept the probe's token (and neither accepts it before it is registered)."""
    import urllib.error
    import urllib.request

    from tests.server.workers import Gateway

    provider = ("providers:\n  jwt:\n    - {name: bastion-probe, issuer: 'urn:bastion:probe', audiences: [api://demo],"
                " algorithms: [ES256], max_lifetime: 5m, registered_keys: {max_ttl: 60s}}\n")
    gw = Gateway(tmp_path, workers=2, extra=provider)
    gw.path.write_text(gw.path.read_text().replace("open: {identity: {required: false}}",
                                                   "open: {identity: {required: true, methods: [jwt]}}"))
    key = _key()
    bearer = _bearer(key)

    def statuses(n: int) -> set[int]:
        seen = set()
        for _ in range(n):  # new connections, spread over both workers by SO_REUSEPORT (20: all on one, ~2^-19)
            request_ = urllib.request.Request(f"http://127.0.0.1:{gw.port}/items", headers=bearer)
            try:
                with urllib.request.urlopen(request_, timeout=10) as response:
                    seen.add(response.status)
            except urllib.error.HTTPError as exc:
                seen.add(exc.code)
        return seen

    try:
        gw.start()
        assert statuses(10) == {401}
        status, answer = gw.post_admin("/probe/credentials", {"public_jwk": key.as_dict(private=False),
                                                              "ttl_seconds": 30})
        assert status == 200, answer
        assert statuses(20) == {200}
        pids = {w["pid"] for w in gw.workers_info()}
        assert len(pids) == 2
    finally:
        gw.stop()
