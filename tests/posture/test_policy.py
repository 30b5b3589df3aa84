"""The effective policy of one route, as `bastion explain`, `bastion diff` and the report show it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.compile import CompiledGateway, compile_config
from bastion.config.loader import load_config
from bastion.posture.policy import route_policy
from tests.posture.conftest import demo_config


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledGateway:
    path, _ = demo_config(tmp_path_factory.mktemp("policy"), "https://idp.example.com", "http://127.0.0.1:9/v1")
    return compile_config(load_config(path))


def _route(compiled: CompiledGateway, route_id: str):
    return next(r for r in compiled.routes if r.info.route_id == route_id)


def test_every_control_has_its_value_and_source(compiled: CompiledGateway):
    doc = route_policy(_route(compiled, "orders/list-orders"), now=compiled.loaded_at)
    assert (doc["route"], doc["api"], doc["class"], doc["path"], doc["methods"]) == (
        "orders/list-orders", "orders", "partner", "/orders", ["GET"])
    assert doc["upstream"] == "http://127.0.0.1:9/v1" and doc["administrative"] is False
    assert doc["controls"]["identity.required"] == {"value": True, "source": "class:partner"}
    assert doc["controls"]["authz.scopes"]["source"] == "route:orders/list-orders"
    assert doc["authorization"] == []  # only with the authorisation layer's shared object
    assert doc["exceptions"] == [] and doc["policy_changes_at"] == "never"


def test_authorisation_lines_come_from_the_authz_layer(compiled: CompiledGateway):
    doc = route_policy(_route(compiled, "orders/create-order"), compiled.shared.authz, now=compiled.loaded_at)
    assert len(doc["authorization"]) == 1 and "orders:write" in doc["authorization"][0]


def test_an_exception_shows_as_the_source_and_its_expiry(compiled: CompiledGateway):
    # the demo's EXC-DEMO-1 lifts identity.required
    doc = route_policy(_route(compiled, "catalog/status"), now=compiled.loaded_at)
    assert doc["controls"]["identity.required"] == {"value": False, "source": "exception:EXC-DEMO-1"}
    assert [e["id"] for e in doc["exceptions"]] == ["EXC-DEMO-1"]
    assert doc["policy_changes_at"] == doc["exceptions"][0]["expires"] and doc["policy_changes_at"].endswith("Z")


def test_a_section_waived_whole_reads_waived(tmp_path: Path):
    def waive_identity(doc: dict) -> None:
        doc["exceptions"][0]["controls"] = ["identity"]

    path, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9", waive_identity)
    compiled = compile_config(load_config(path), build_stages=False)
    doc = route_policy(_route(compiled, "catalog/status"), now=compiled.loaded_at)
    identity = {c: e for c, e in doc["controls"].items() if c.startswith("identity.")}
    assert identity and all(e == {"value": "waived", "source": "exception:EXC-DEMO-1"} for e in identity.values())
    assert doc["controls"]["traffic.max_body_bytes"]["value"] != "waived"
