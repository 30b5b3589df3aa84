"""Attack planning: which attacks a route's effective policy calls for, and what each must get back."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from joserfc.jwk import ECKey

from bastion.compile import CompiledRoute, compile_config
from bastion.config.loader import load_config
from bastion.posture.attacks import UNDECLARED_FIELD, ProbeOptions, concrete_path, plan_route, sample
from bastion.posture.tokens import TokenForge
from bastion.stages.identity.config import IdentityPolicy
from bastion.stages.input.config import InputPolicy
from bastion.stages.traffic.config import RateLimit, TrafficPolicy
from bastion.stages.transport import TransportPolicy

SPEC = """
openapi: 3.1.0
info: {title: orders, version: "1"}
paths:
  /orders/{order_id}:
    parameters: [{name: order_id, in: path, required: true, schema: {type: integer}}]
    put:
      operationId: putOrder
      security: [{oauth: [orders:write]}]
      requestBody:
        content:
          application/json:
            schema:
              type: object
              required: [item, qty]
              properties: {item: {type: string}, qty: {type: integer, minimum: 1}}
      responses: {"200": {description: ok}}
"""

CONFIG = """
version: 1
classes:
  partner: {identity: {required: true, methods: [jwt]}}
apis:
  - {name: orders, owner: o@example.com, class: partner, upstream: "http://127.0.0.1:9", openapi: spec.yaml}
"""


@pytest.fixture
def route(tmp_path: Path) -> CompiledRoute:
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(SPEC))
    (tmp_path / "bastion.yaml").write_text(textwrap.dedent(CONFIG))
    return compile_config(load_config(tmp_path / "bastion.yaml"), build_stages=False).routes[0]


def with_policy(route: CompiledRoute, **sections: object) -> CompiledRoute:
    """The route under a policy with the sections the growing layers will add (authz scopes, input)."""
    base = route.plans[0].policy
    policy = SimpleNamespace(**{"transport": base.transport, "identity": base.identity, "authz": base.authz,
                                "traffic": base.traffic, **sections})
    return dataclasses.replace(route, plans=[dataclasses.replace(route.plans[0], policy=policy)])


def forge() -> TokenForge:
    return TokenForge("urn:probe", "api://x", ECKey.generate_key("P-256", parameters={"kid": "k"}))


def names(attacks) -> list[tuple[str, int, str]]:
    return [(a.name, a.expected, a.skip and "skip") for a in attacks]


def test_identity_only_route(route: CompiledRoute):
    attacks = plan_route(with_policy(route, authz=None), 0, forge(), ProbeOptions())
    assert [a.name for a in attacks] == [
        "no_credential", "alg_none", "foreign_key", "hs256_public_key", "expired", "not_yet_valid",
        "wrong_issuer", "wrong_audience", "oversized_body"]
    assert {a.path for a in attacks} == {"/orders/1"}  # integer path parameter


def test_scopes_from_openapi_security_and_input_attacks(route: CompiledRoute):
    attacks = plan_route(with_policy(route, input=InputPolicy()), 0, forge(), ProbeOptions())
    by_name = {a.name: a for a in attacks}
    assert by_name["missing_scope"].expected == 403
    assert by_name["wrong_content_type"].expected == 415 and by_name["wrong_content_type"].method == "PUT"
    undeclared = json.loads(by_name["undeclared_body_field"].body)
    assert undeclared == {"item": "probe", "qty": 1, UNDECLARED_FIELD: "probe"}
    assert "UNION SELECT" in json.loads(by_name["injection_body"].body)["item"]
    assert by_name["oversized_body"].expected == 413
    assert len(by_name["oversized_body"].body) == 1024 * 1024 + 1


def test_input_controls_off_plan_no_input_attacks(route: CompiledRoute):
    off = InputPolicy(contract="off", undeclared="allow", inspection="detect")
    attacks = plan_route(with_policy(route, input=off), 0, forge(), ProbeOptions())
    assert not {"wrong_content_type", "undeclared_body_field", "injection_body"} & {a.name for a in attacks}


def test_tls_required_on_a_plaintext_target(route: CompiledRoute):
    attacks = plan_route(with_policy(route, transport=TransportPolicy(tls="required")), 0, forge(),
                         ProbeOptions())
    assert names(attacks) == [("plaintext", 403, ""), ("other_attacks", 0, "skip")]
    attacks = plan_route(with_policy(route, transport=TransportPolicy(tls="required")), 0, forge(),
                         ProbeOptions(target_tls=True, plaintext_available=False))
    assert attacks[0].name == "plaintext" and "plain-target" in attacks[0].skip
    assert "no_credential" in {a.name for a in attacks}


def test_without_probe_identity_claim_checks_are_skipped(route: CompiledRoute):
    untrusted = TokenForge("urn:idp", "api://x", None, [ECKey.generate_key("P-256")])
    attacks = {a.name: a for a in plan_route(with_policy(route, authz=SimpleNamespace()), 0, untrusted,
                                             ProbeOptions())}
    assert not attacks["alg_none"].skip and not attacks["hs256_public_key"].skip
    assert "probe identity" in attacks["expired"].skip and "probe identity" in attacks["wrong_audience"].skip


def test_rate_limit_burst_only_with_the_flag(route: CompiledRoute):
    traffic = TrafficPolicy(rate_limits=[RateLimit(name="r", limit=5, window=60)])
    plain = plan_route(with_policy(route, traffic=traffic, authz=SimpleNamespace()), 0, forge(), ProbeOptions())
    assert "rate_limit_burst" not in {a.name for a in plain}
    burst = plan_route(with_policy(route, traffic=traffic, authz=SimpleNamespace()), 0, forge(),
                       ProbeOptions(include_rate_limit=True))
    assert [(a.expected, a.repeat) for a in burst if a.name == "rate_limit_burst"] == [(429, 6)]


def test_identity_not_required_still_verifies_sent_tokens(route: CompiledRoute):
    attacks = plan_route(with_policy(route, identity=IdentityPolicy(required=False), authz=SimpleNamespace()),
                         0, forge(), ProbeOptions())
    assert "no_credential" not in {a.name for a in attacks} and "alg_none" in {a.name for a in attacks}


@pytest.mark.parametrize(("schema", "value"), [
    ({"type": "integer", "minimum": 5}, 5), ({"type": "string", "format": "uuid"},
                                             "00000000-0000-4000-8000-000000000001"),
    ({"enum": ["a", "b"]}, "a"), ({"type": ["null", "boolean"]}, True),
    ({"type": "object", "required": ["a"], "properties": {"a": {"type": "array", "minItems": 1,
                                                                "items": {"type": "number"}}}}, {"a": [1.0]}),
])
def test_sample(schema, value):
    assert sample(schema) == value


def test_concrete_path_without_operation(route: CompiledRoute):
    bare = dataclasses.replace(route, info=dataclasses.replace(route.info, operation=None))
    assert concrete_path("/a/{x}/b", bare) == "/a/1/b"
