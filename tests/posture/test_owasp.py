"""The OWASP API Top 10 mapping credits a route only for controls in force on it at the instant, rule by rule."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.posture import owasp
from bastion.posture.controls import plan_at

NOW = datetime(2030, 6, 1, tzinfo=UTC).timestamp()

SPEC = """
openapi: 3.1.0
info: {title: T, version: "1"}
paths:
  /op:
    post:
      operationId: op
      requestBody:
        content: {application/json: {schema: {type: object, properties: {a: {type: string}}}}}
      responses: {"200": {description: ok}}
"""

CONFIG = """
version: 1
gateway: {listeners: [{address: 127.0.0.1, port: 0}]{gateway}}
classes:
  c:
    {klass}
apis:
  - name: a
    owner: team@example.com
    class: c
    upstream: http://127.0.0.1:9
    {openapi}
    routes:
      - {name: r, path: "/r/{id}", methods: [GET, POST], policy: {route}}
{exceptions}
"""

WAIVE_IDENTITY = """
exceptions:
  - id: EXC-1
    target: {api: a, route: r}
    controls: [identity]
    owner: team@example.com
    reason: a health checker without tokens
    evidence: https://tickets.example.com/1
    created: 2030-05-20T00:00:00Z
    expires: 2030-06-10T00:00:00Z
"""


def credit(tmp_path: Path, route: str = "{}", klass: str = "", openapi: bool = False, exceptions: str = "",
           name: str = "a/r", now: float = NOW, gateway: str = "") -> tuple[dict[str, list[str]], dict[str, str]]:
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "issuer.pem").write_text("")  # revocation sources are read when the gateway starts, not here
    klass = klass if "identity:" in klass else "identity: {required: false}\n    " + klass
    text = CONFIG.replace("{gateway}", gateway).replace("{klass}", klass).replace("{openapi}", "openapi: spec.yaml" if openapi else "")
    (tmp_path / "bastion.yaml").write_text(textwrap.dedent(text.replace("{route}", route)
                                                           .replace("{exceptions}", exceptions)))
    compiled = compile_config(load_config(tmp_path / "bastion.yaml"), now=now, build_stages=False)
    target = next(r for r in compiled.routes if r.info.route_id == name)
    return owasp.credit(target, plan_at(target, now))


REVOCATION = ", revocation: {issuers: [issuer.pem], ocsp: true}"

# (rule's control, what turns it on, what leaves it off) -- one row per rule, each with its negative case
CASES: list[tuple[str, dict[str, object], dict[str, object] | None]] = [
    ("transport.tls", {"klass": "transport: {tls: required}"}, {}),
    ("transport.mtls", {"klass": "transport: {mtls: required}"}, {"klass": "transport: {tls: required}"}),
    ("transport.min_tls", {"klass": "transport: {tls: required, min_tls: '1.3'}"},
     {"klass": "transport: {min_tls: '1.3'}"}),  # TLS 1.3 demanded on a route that does not require TLS
    ("transport.revocation", {"klass": "transport: {mtls: required, revocation: hard}", "gateway": REVOCATION},
     {"klass": "transport: {mtls: required}", "gateway": REVOCATION}),
    ("identity.required", {"route": "{identity: {required: true}}"}, {}),
    ("identity.require_consumer", {"route": "{identity: {required: true, require_consumer: true}}"},
     {"route": "{identity: {require_consumer: true}}"}),  # no identity required: nobody to be a consumer
    ("identity.require_bound_tokens", {"route": "{identity: {required: true, require_bound_tokens: true}}"},
     {"route": "{identity: {required: true}}"}),
    ("authz.scopes", {"route": "{authz: {scopes: [a:read]}}"}, {}),
    ("authz.roles", {"route": "{authz: {roles: {any_of: [admin]}}}"}, {}),
    ("authz.admin_roles", {"route": "{authz: {administrative: true}}", "klass": "authz: {admin_roles: [ops]}"},
     {"klass": "authz: {admin_roles: [ops]}"}),  # roles for administrative routes, on a route that is not one
    ("authz.opa", {"route": "{authz: {opa: {url: 'http://127.0.0.1:8181'}}}"}, {}),  # unset is not "on"
    ("authz.cedar", {"route": "{authz: {cedar: {policies: p.cedar}}}"}, {}),
    ("authz.owner", {"route": "{authz: {owner: [{from: path.id, equals: subject}]}}"}, {}),
    ("authz.conditions", {"route": "{authz: {conditions: {read-only: 'method == \"GET\"'}}}"}, {}),
    ("traffic.rate_limits", {"route": "{traffic: {rate_limits: [{name: x, limit: 5, window: 1m}]}}"}, {}),
    ("traffic.quotas", {"route": "{traffic: {quotas: [{name: q, limit: 5, period: day}]}}"}, {}),
    ("traffic.max_concurrent", {"route": "{traffic: {max_concurrent: 4}}"}, {}),
    ("traffic.ip", {"route": "{traffic: {ip: {allow: [10.0.0.0/8]}}}"}, {}),  # the default allows everyone
    ("traffic.max_body_bytes", {}, {"exceptions": "WAIVE_TRAFFIC"}),
    ("traffic.upstream_timeout", {}, {"exceptions": "WAIVE_TRAFFIC"}),
    ("input.contract", {"openapi": True, "name": "a/op"}, {}),  # enforce, but no OpenAPI operation to check
    ("input.undeclared", {"openapi": True, "name": "a/op"}, {}),
    ("input.inspection", {}, {"klass": "input: {inspection: detect}"}),
    ("input.inspection_categories", {}, {"klass": "input: {inspection_categories: [sqli]}"}),
    ("input.max_json_depth", {}, {"exceptions": "WAIVE_INPUT"}),
    ("gateway.default_deny", {}, None),  # every route: the gateway refuses what no API declares
]


def _waiver(control: str) -> str:
    return (WAIVE_IDENTITY.replace("controls: [identity]", f"controls: [{control}]"))


def _args(case: dict[str, object]) -> dict[str, object]:
    args = dict(case)
    if args.get("exceptions") == "WAIVE_TRAFFIC":
        args["exceptions"] = _waiver("traffic")
    if args.get("exceptions") == "WAIVE_INPUT":
        args["exceptions"] = _waiver("input")
    return args


def test_every_rule_has_a_row() -> None:
    assert sorted(c for c, _, _ in CASES) == sorted(r.control for r in owasp.RULES)


@pytest.mark.parametrize(("control", "on", "off"), CASES, ids=[c for c, _, _ in CASES])
def test_rule_credits_only_a_control_in_force(tmp_path: Path, control: str, on: dict[str, object],
                                              off: dict[str, object] | None) -> None:
    rule = next(r for r in owasp.RULES if r.control == control)
    credited, why = credit(tmp_path, **_args(on))  # type: ignore[arg-type]
    assert all(control in credited[c] for c in rule.categories) and why[control] == rule.why
    if off is not None:
        credited, why = credit(tmp_path, **_args(off))  # type: ignore[arg-type]
        assert control not in why and not any(control in controls for controls in credited.values())


def test_a_waived_identity_is_not_credited_api2_and_is_again_once_its_exception_ends(tmp_path: Path) -> None:
    """The issue's catalog/status: identity waived by an exception earns no API2 while the waiver is in force."""
    route = "{identity: {required: false}}"
    klass = "identity: {required: true}"
    during, _ = credit(tmp_path, route, klass.replace("required: true", "required: true, methods: [jwt]"),
                       exceptions=WAIVE_IDENTITY)
    assert "API2:2023" not in during
    after, why = credit(tmp_path, route, klass, exceptions=WAIVE_IDENTITY,
                        now=datetime(2030, 6, 10, tzinfo=UTC).timestamp())
    assert after["API2:2023"] == ["identity.required"] and "anonymous" in why["identity.required"]


def test_api10_is_never_claimed(tmp_path: Path) -> None:
    credited, _ = credit(tmp_path, "{identity: {required: true}, authz: {scopes: [x]}}", "transport: {tls: required}")
    assert "API10:2023" not in credited
