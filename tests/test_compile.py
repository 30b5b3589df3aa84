"""Baselines as code: routes inherit their class, may tighten it, and are weaker only through an exception."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from bastion.compile import compile_config
from bastion.config.loader import ConfigError, load_config

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()

BASE = """
version: 1
classes:
  public:
    identity: {required: true, methods: [jwt]}
    traffic: {max_body_bytes: 1KiB}
apis:
  - name: orders
    owner: team-orders@example.com
    class: public
    upstream: http://127.0.0.1:9000
    base_path: /orders
    routes:
      - name: list
        path: /
        methods: [GET]
      - name: get
        path: "/{id}"
        methods: [GET]
        policy: {traffic: {max_body_bytes: 512}}
"""


def _compile(tmp_path, text, now=NOW):
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(text))
    return compile_config(load_config(path), now=now, build_stages=False)


def _messages(tmp_path, text, now=NOW):
    with pytest.raises(ConfigError) as info:
        _compile(tmp_path, text, now)
    return [str(d) for d in info.value.diagnostics]


def test_routes_inherit_and_tighten(tmp_path):
    compiled = _compile(tmp_path, BASE)
    by_name = {r.info.route: r for r in compiled.routes}
    assert by_name["list"].plan(NOW).policy.traffic.max_body_bytes == 1024
    assert by_name["get"].plan(NOW).policy.traffic.max_body_bytes == 512  # tightening needs no exception
    assert by_name["get"].info.sources["traffic.max_body_bytes"] == "route:orders/get"


def test_weaker_route_without_exception_is_refused_naming_route_control_and_class(tmp_path):
    text = BASE.replace("policy: {traffic: {max_body_bytes: 512}}", "policy: {identity: {required: false}}")
    messages = _messages(tmp_path, text)
    assert len(messages) == 1
    assert ":20:" in messages[0] and "routes[1].policy.identity.required" in messages[0]
    assert "route orders/get" in messages[0] and "identity.required" in messages[0] and "'public'" in messages[0]


def test_weaker_api_layer_is_refused_too(tmp_path):
    text = BASE.replace("    base_path: /orders\n", "    base_path: /orders\n    policy: {identity: {methods: [jwt, api_key]}}\n")
    messages = _messages(tmp_path, text)
    assert any("apis[0].policy.identity.methods" in m for m in messages)


EXCEPTION = """
exceptions:
  - id: EXC-7
    target: {api: orders, route: get}
    controls: [identity.required]
    owner: alice@example.com
    reason: legacy partner cannot send tokens yet
    evidence: https://tickets.example.com/SEC-7
    created: 2026-11-01T00:00:00Z
    expires: 2026-12-01T00:00:00Z
"""


def test_exception_relaxes_until_its_instant_then_the_baseline_returns(tmp_path):
    text = BASE.replace("policy: {traffic: {max_body_bytes: 512}}", "policy: {identity: {required: false}}") + EXCEPTION
    compiled = _compile(tmp_path, text)
    route = next(r for r in compiled.routes if r.info.route == "get")
    expires = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    during = route.plan(expires - 0.001)
    assert during.policy.identity.required is False and during.exceptions == ("EXC-7",)
    after = route.plan(expires)
    assert after.policy.identity.required is True and after.exceptions == ()


def test_expired_exception_is_a_warning_and_the_baseline_is_enforced(tmp_path):
    text = BASE.replace("policy: {traffic: {max_body_bytes: 512}}", "policy: {identity: {required: false}}") + EXCEPTION
    later = datetime(2026, 12, 5, tzinfo=UTC).timestamp()
    compiled = _compile(tmp_path, text, now=later)
    assert any("expired" in str(w) for w in compiled.warnings)
    route = next(r for r in compiled.routes if r.info.route == "get")
    assert route.plan(later).policy.identity.required is True


def test_exception_longer_than_maximum_is_refused(tmp_path):
    text = BASE + EXCEPTION.replace("2026-12-01T00:00:00Z", "2027-06-01T00:00:00Z")
    assert any("the maximum is 90" in m for m in _messages(tmp_path, text))


def test_section_waiver_switches_the_stage_off_for_its_time(tmp_path):
    text = BASE + EXCEPTION.replace("[identity.required]", "[identity]")
    compiled = _compile(tmp_path, text)
    route = next(r for r in compiled.routes if r.info.route == "get")
    assert route.plan(NOW).waived == (("identity", "EXC-7"),)
    assert route.plan(datetime(2026, 12, 1, tzinfo=UTC).timestamp()).waived == ()


def test_api_without_owner_is_refused(tmp_path):
    messages = _messages(tmp_path, BASE.replace("    owner: team-orders@example.com\n", ""))
    assert any("has no `owner`" in m and "apis[0]" in m for m in messages)


def test_unknown_class_and_targets(tmp_path):
    assert any("unknown class 'nope'" in m for m in _messages(tmp_path, BASE.replace("class: public", "class: nope")))
    text = BASE + EXCEPTION.replace("route: get", "route: ghost")
    assert any("unknown route orders/ghost" in m for m in _messages(tmp_path, text))


def test_duplicate_routes_are_refused(tmp_path):
    text = BASE.replace('path: "/{id}"', "path: /")
    assert any("is already routed" in m for m in _messages(tmp_path, text))


def test_routes_from_openapi(tmp_path):
    (tmp_path / "orders.yaml").write_text(textwrap.dedent("""
        openapi: 3.1.0
        info: {title: orders, version: "1"}
        paths:
          /{id}:
            parameters: [{name: id, in: path, required: true, schema: {type: integer}}]
            get: {operationId: getOrder, responses: {"200": {description: ok}}}
            delete: {operationId: deleteOrder, x-bastion-admin: true, responses: {"204": {description: gone}}}
    """))
    text = BASE.split("    routes:")[0] + "    openapi: orders.yaml\n    routes:\n      - {operation: getOrder, policy: {traffic: {max_body_bytes: 10}}}\n"
    compiled = _compile(tmp_path, text)
    routes = {r.info.route: r for r in compiled.routes}
    assert set(routes) == {"getOrder", "deleteOrder"}
    assert routes["getOrder"].plan(NOW).policy.traffic.max_body_bytes == 10
    assert routes["deleteOrder"].admin is True
    assert routes["getOrder"].info.path_params == ("id",)
    assert routes["getOrder"].info.operation["parameters"][0]["name"] == "id"


@pytest.mark.parametrize(("limit", "loads"), [(None, True), ("at", True), ("under", False)])
def test_openapi_max_bytes_bounds_each_file_of_the_document(tmp_path, limit, loads):
    (tmp_path / "orders.yaml").write_text(textwrap.dedent("""
        openapi: 3.1.0
        info: {title: orders, version: "1"}
        paths:
          /{id}: {$ref: "item.yaml"}
    """))
    item = 'get: {operationId: getOrder, parameters: [{name: id, in: path, required: true}], responses: {}}\n'
    (tmp_path / "item.yaml").write_text(item)  # the larger file: a $ref'd file counts on its own
    field = {None: "", "at": f"    openapi_max_bytes: {len(item)}\n", "under": f"    openapi_max_bytes: {len(item) - 1}\n"}
    text = BASE.split("    routes:")[0] + "    openapi: orders.yaml\n" + field[limit] + "    routes: []\n"
    if loads:
        assert {r.info.route for r in _compile(tmp_path, text).routes} == {"getOrder"}
    else:
        assert any(f"item.yaml:1:1: file larger than {len(item) - 1} bytes" in m for m in _messages(tmp_path, text))


def test_layer_rules_become_diagnostics(tmp_path):
    """A layer's own cross-field rule (here: duplicate consumers) is reported by validate, not raised."""
    text = BASE + "consumers:\n  - {name: acme}\n  - {name: acme}\n"
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        compile_config(load_config(path), now=NOW)
    assert any("identity:" in str(d) and "acme" in str(d) for d in info.value.diagnostics)


def test_a_plan_that_cannot_be_built_after_an_exception_refuses_every_request(tmp_path):
    """When an exception ends and the class requirement cannot be met, the route fails closed, with a warning."""
    import asyncio

    from bastion.compile import Unsatisfiable
    from bastion.context import RequestContext

    text = BASE.replace("    identity: {required: true, methods: [jwt]}\n",
                        "    identity: {required: true, methods: [jwt]}\n    authz: {require_scopes: true}\n")
    text = text.replace("policy: {traffic: {max_body_bytes: 512}}", "policy: {authz: {require_scopes: false}}")
    text = text.replace("      - name: list\n        path: /\n        methods: [GET]\n",
                        "      - name: list\n        path: /\n        methods: [GET]\n"
                        "        policy: {authz: {scopes: [orders:read]}}\n")
    text += EXCEPTION.replace("[identity.required]", "[authz.require_scopes]")
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(text))
    compiled = compile_config(load_config(path), now=NOW)
    assert any("refuse every request" in str(w) for w in compiled.warnings)
    route = next(r for r in compiled.routes if r.info.route == "get")
    later = route.plan(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    refusal = next(s for s in later.stages if isinstance(s, Unsatisfiable))
    ctx = RequestContext(method="GET", raw_target="/", path="/", query="", headers=[], client_ip="1.2.3.4",
                         request_id="r", start=NOW)
    decision = asyncio.run(refusal.check(ctx))
    assert decision.status == 403 and decision.reason == "policy_unsatisfiable"


async def test_relative_key_files_are_read_from_the_configs_directory_not_the_working_one(tmp_path, monkeypatch):
    import json

    from joserfc.jwk import ECKey

    conf = tmp_path / "conf"
    conf.mkdir()
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    (conf / "keys.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    (conf / "bastion.yaml").write_text(BASE + textwrap.dedent("""
        providers:
          jwt:
            - {name: idp, issuer: https://idp.example, audiences: [orders], algorithms: [ES256],
               jwks_file: keys.json}
        """))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # `serve` started from another directory, as a service manager does
    compiled = compile_config(load_config(conf / "bastion.yaml"), now=NOW)
    jwks = compiled.shared.identity.jwks["idp"]
    try:
        assert [k.kid for k in await jwks.keys_for("k1", "ES256")] == ["k1"]
    finally:
        await compiled.shared.identity.close()
