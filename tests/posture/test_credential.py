"""`bastion probe` with no key on disk: it registers a short-lived credential through the demo gateway's
authenticated admin API, runs every attack that needs a valid token with it, and says so in its report."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.posture import render
from bastion.posture.credential import register, registered_provider
from bastion.posture.probe import checked_probe, identity_line, probe
from bastion.posture.report import build
from tests.posture.conftest import running_demo

ADMIN_TOKEN = "probe-admin-token-for-tests-only"


def _registered(doc: dict[str, Any]) -> None:
    """The demo's own probe provider (keys registered at runtime), and an admin API that needs a token."""
    doc["providers"]["jwt"] = [p for p in doc["providers"]["jwt"] if p["name"] != "bastion-probe"]
    doc["providers"]["jwt"].append({"name": "bastion-probe", "issuer": "urn:bastion:probe",
                                    "audiences": ["api://demo"], "algorithms": ["ES256"], "max_lifetime": "5m",
                                    "registered_keys": {"max_ttl": "10m"}})
    doc["gateway"]["admin"]["auth"] = {"token_sha256": [hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()]}


async def test_probe_runs_every_attack_with_a_registered_credential(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_demo(tmp_path / "demo", _registered) as demo:
        provider = registered_provider(load_config(demo.config).model.providers.jwt)
        assert provider is not None and provider.name == "bastion-probe"
        admin = f"http://127.0.0.1:{demo.admin_port}"
        with pytest.raises(ValueError, match=r"refused the probe credential \(401"):
            await asyncio.to_thread(register, admin, provider)  # no admin token: no credential
        monkeypatch.setenv("BASTION_ADMIN_TOKEN", ADMIN_TOKEN)
        # asks for an hour, gets the provider's 10 minutes (the CLI calls it blocking; the gateway runs in this loop)
        credential = await asyncio.to_thread(register, admin, provider, ttl=3600)
        now = demo.runtime.services.wall_clock()
        assert 599 < credential.expires - now <= 600
        report = await probe(demo.config, demo.target, credential=credential)
    assert report["summary"]["fail"] == 0, report["results"]
    results = {(r["route"], r["attack"]): r for r in report["results"]}
    skipped = [(route, attack, r["detail"]) for (route, attack), r in results.items() if r["result"] == "skip"]
    assert not [s for s in skipped if "probe identity" in s[2] or "credential" in s[2]], skipped
    for attack in ("valid_probe_token", "expired", "not_yet_valid", "wrong_issuer", "wrong_audience",
                   "missing_scope"):
        assert results[("orders/get-order", attack)]["result"] == "pass", attack
    assert results[("orders/get-order", "valid_probe_token")]["observed"] == 200
    assert results[("orders/get-order", "foreign_key")]["observed"] == 401  # the registered kid, another key
    assert report["identity"] == {"source": "registered", "provider": "bastion-probe", "kid": credential.kid,
                                  "expires": credential.expires, "admin": admin}
    assert identity_line(report).startswith("probe identity: a short-lived credential registered through the "
                                            f"admin API at {admin} (provider bastion-probe, trusted until ")
    # the posture report says it too, from the published result
    compiled = compile_config(load_config(demo.config), build_stages=False)
    text = render.markdown(build(compiled, now, probe=checked_probe(report)))
    assert f"Probe identity: a short-lived credential registered through the admin API at {admin}" in text


def test_a_provider_without_registered_keys_gives_no_credential(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no registered_keys"):
        register("http://127.0.0.1:9", load_config(_config(tmp_path)).model.providers.jwt[0])
    assert identity_line({"identity": {"source": "none"}}).startswith("probe identity: none")


def _config(tmp_path: Path) -> Path:
    from tests.posture.conftest import demo_config

    path, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9")
    return path
