"""BOLA planning: which owner rules the probe can exercise, objects A and B, the claims and requests it builds."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from bastion.compile import CompiledRoute, compile_config
from bastion.config.loader import load_config
from bastion.posture.attacks import ProbeOptions, plan_route
from bastion.posture.bola import other_id
from bastion.stages.authz.config import OwnerRule
from bastion.stages.input.config import InputPolicy
from tests.posture.test_attacks import CONFIG, SPEC, forge, with_policy


@pytest.fixture
def route(tmp_path: Path) -> CompiledRoute:
    """PUT /orders/{order_id} (integer id, JSON body), class partner."""
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(SPEC))
    (tmp_path / "bastion.yaml").write_text(textwrap.dedent(CONFIG))
    return compile_config(load_config(tmp_path / "bastion.yaml"), build_stages=False).routes[0]


@pytest.mark.parametrize(("own", "other"), [
    ("1", "2"), ("9", "0"), ("probe", "probf"), ("abz", "aba"), ("ID-7", "ID-8"),
    ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"), ("--", "--0"), ("", "0"),
])
def test_other_id_keeps_the_shape(own: str, other: str):
    assert other_id(own) == other


def _claims(authorization: str) -> dict:
    payload = authorization.split()[1].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _owned(route: CompiledRoute, *rules: dict) -> CompiledRoute:
    owner = [OwnerRule.model_validate(r) for r in rules]
    return with_policy(route, authz=SimpleNamespace(scopes=["orders:write"], owner=owner), input=InputPolicy())


def _by_name(attacks) -> dict:
    return {a.name: a for a in attacks}


def test_path_query_and_header_ids_bound_to_claims(route: CompiledRoute):
    owned = _owned(route, {"from": "path.order_id", "in": "claim:orders"},
                   {"from": "query.account", "equals": "claim:ext.account"},
                   {"from": "header.X-Tenant", "equals": "subject"})
    attacks = _by_name(plan_route(owned, 0, forge(), ProbeOptions()))
    bola = [a for a in attacks.values() if a.name.startswith("bola")]
    assert [(a.name, a.method, a.path, a.expected) for a in bola] == [
        ("bola:path.order_id", "PUT", "/orders/2?account=1", 403),  # an undeclared query id gets "1"
        ("bola:query.account", "PUT", "/orders/1?account=2", 403),
        ("bola:header.X-Tenant", "PUT", "/orders/1?account=1", 403),
    ]
    # every request carries a token naming the probe's own objects, with the route's scopes
    for attack in bola:
        headers = dict(attack.headers)
        claims = _claims(headers["Authorization"])
        assert (claims["orders"], claims["ext"], claims["scope"]) == (["1"], {"account": "1"}, "orders:write")
        assert claims["sub"] == "bastion-probe"
    assert dict(attacks["bola:header.X-Tenant"].headers)["x-tenant"] == "bastion-probf"
    assert dict(attacks["bola:path.order_id"].headers)["x-tenant"] == "bastion-probe"
    # the route is PUT only: the probe does not write its own object, and says what that leaves unproven
    assert "GET/HEAD" in attacks["valid_probe_token"].skip
    # the other attacks that need a valid caller name object A too, so only their own control refuses them
    assert attacks["wrong_content_type"].path == "/orders/1?account=1" and not attacks["wrong_content_type"].skip


def test_two_ids_in_one_list_claim_stay_distinct(route: CompiledRoute):
    owned = _owned(route, {"from": "path.order_id", "in": "claim:orders"},
                   {"from": "query.copy_of", "in": "claim:orders"})
    attacks = _by_name(plan_route(owned, 0, forge(), ProbeOptions()))
    assert _claims(dict(attacks["bola:path.order_id"].headers)["Authorization"])["orders"] == ["1", "2"]
    # B is outside everything the claim grants
    assert attacks["bola:path.order_id"].path == "/orders/3?copy_of=2"
    assert attacks["bola:query.copy_of"].path == "/orders/1?copy_of=3"


@pytest.mark.parametrize(("rule", "reason"), [
    ({"from": "path.order_id", "lookup": {"url": "http://owners.internal/owner"}}, "ownership lookup"),
    ({"from": "path.order_id", "equals": "consumer"}, "bound to consumer"),
    ({"from": "path.order_id", "equals": "claim:iss"}, "bound to claim:iss"),
    ({"from": "body./order/account", "in": "claim:accounts"}, "body ids are not probed"),
])
def test_rules_the_probe_cannot_satisfy_are_skipped_with_the_reason(route: CompiledRoute, rule: dict, reason: str):
    attacks = plan_route(_owned(route, rule), 0, forge(), ProbeOptions())
    skipped = [a for a in attacks if a.name.startswith("bola")]
    assert len(skipped) == 1 and reason in skipped[0].skip
    # the attacks that need a valid caller cannot get past the owner rule either: skipped, never passed
    assert all(a.skip for a in attacks if a.name in ("wrong_content_type", "undeclared_body_field"))


def test_without_a_probe_key_bola_is_skipped(route: CompiledRoute):
    untrusted = forge()
    untrusted.key = None
    attacks = _by_name(plan_route(_owned(route, {"from": "path.order_id", "in": "claim:orders"}), 0, untrusted,
                                  ProbeOptions()))
    assert "probe identity" in attacks["bola:path.order_id"].skip


def test_an_optional_body_rule_does_not_stop_the_probe(route: CompiledRoute):
    owned = _owned(route, {"from": "path.order_id", "in": "claim:orders"},
                   {"from": "body./account", "in": "claim:accounts", "optional": True})
    attacks = _by_name(plan_route(owned, 0, forge(), ProbeOptions()))
    assert not attacks["bola:path.order_id"].skip
