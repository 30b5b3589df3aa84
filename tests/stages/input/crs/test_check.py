"""The CRS inside the input stages and the config: blocks with an audit detail, every request part, XML,
validate refusing a bad rules directory, and exclusions as governed exceptions."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from bastion.compile import compile_config
from bastion.config.loader import ConfigError, load_config
from bastion.context import Deny
from tests.stages.input.conftest import request, run_input
from tests.stages.input.crs.conftest import requires_crs
from tests.stages.input.test_stage import multipart

pytestmark = requires_crs
CRS = {"enabled": True, "paranoia": 1}
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()


def post(kind: str, body: bytes) -> object:
    return request("POST", headers=[("content-type", kind), ("host", "api.example")], body=body)


async def test_json_attack_is_blocked_with_rule_ids_variable_and_a_bounded_excerpt(shop, shared) -> None:
    body = orjson.dumps({"user": {"bio": "1' UNION SELECT password FROM users-- " + "x" * 200}})
    deny = await run_input(shop, None, post("application/json", body), shared, crs=CRS,
                           inspection_categories=[])
    assert isinstance(deny, Deny) and (deny.status, deny.reason) == (400, "input_injection_crs")
    assert deny.detail == "The request was refused by content inspection."  # nothing of the payload
    log = deny.log_detail or ""
    assert "942100@ARGS:json.user.bio=" in log and "pl1" in log and "sql_injection=" in log
    assert "x" * 30 not in log  # the excerpt is bounded


@pytest.mark.parametrize(("kind", "body"), [
    ("application/x-www-form-urlencoded", b"1%27+UNION+SELECT+password+FROM+users--=1"),  # a form field *name*
    ("multipart/form-data; boundary=XyZ", multipart(("doc", "a';.php", b"\x89PNG"))),  # 920120: FILES
    ("multipart/form-data; boundary=XyZ", multipart(("meta", None, b"; cat /etc/passwd"))),
])
async def test_form_names_filenames_and_parts_are_inspected(shop, shared, kind, body) -> None:
    if "XyZ" in kind and b"meta" in body:  # a non-text part: its bytes are an argument, whatever its type
        body = body.replace(b"Content-Disposition: form-data; name=\"meta\"",
                            b"Content-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/x-sh")
    deny = await run_input(shop, None, post(kind, body), shared, crs=CRS, inspection_categories=[])
    assert isinstance(deny, Deny) and deny.reason == "input_injection_crs"


async def test_bastions_own_rules_inspect_filenames_and_form_names_too(shop, shared) -> None:
    body = multipart(("doc", "<script>alert(1)</script>.png", b"\x89PNG"))
    deny = await run_input(shop, None, post("multipart/form-data; boundary=XyZ", body), shared)
    assert isinstance(deny, Deny) and deny.reason == "input_injection_xss"
    form = b"1%27+UNION+SELECT+password+FROM+users--=1"
    deny = await run_input(shop, None, post("application/x-www-form-urlencoded", form), shared)
    assert isinstance(deny, Deny) and deny.reason == "input_injection_sqli"


async def test_clean_requests_pass(shop, shared) -> None:
    body = orjson.dumps({"user": {"name": "Zoë O'Neil", "note": "Timeout after 30s"}})
    assert not isinstance(await run_input(shop, None, post("application/json", body), shared, crs=CRS), Deny)


async def test_undeclared_xml_is_refused_not_passed_uninspected(shop, shared) -> None:
    deny = await run_input(shop, None, post("application/xml", b"<a>x</a>"), shared, crs=CRS)
    assert isinstance(deny, Deny) and (deny.status, deny.reason) == (415, "input_unsupported_media_type")


async def test_removed_rules_and_targets_let_the_value_through(shop, shared) -> None:
    body = orjson.dumps({"html": "<script>alert(1)</script>"})
    ctx = post("application/json", body)
    assert isinstance(await run_input(shop, None, ctx, shared, crs=CRS, inspection_categories=[]), Deny)
    removed = {**CRS, "remove_targets": [f"{r};ARGS:json.html" for r in ("941100", "941110", "941160")]}
    assert not isinstance(await run_input(shop, None, post("application/json", body), shared, crs=removed,
                                          inspection_categories=[]), Deny)


async def test_removed_tags_switch_a_whole_family_off(shop, shared) -> None:
    body = orjson.dumps({"note": "1' UNION SELECT password FROM users--"})
    assert isinstance(await run_input(shop, None, post("application/json", body), shared, crs=CRS,
                                      inspection_categories=[]), Deny)
    for tags, refused in ((["attack-sqli"], False), (["attack-xss"], True)):
        outcome = await run_input(shop, None, post("application/json", body), shared,
                                  crs={**CRS, "remove_tags": tags}, inspection_categories=[])
        assert isinstance(outcome, Deny) is refused, tags


async def test_detect_mode_records_and_lets_through(shop, shared) -> None:
    ctx = post("application/json", orjson.dumps({"q": "<script>alert(1)</script>"}))
    assert not isinstance(await run_input(shop, None, ctx, shared, crs=CRS, inspection="detect",
                                          inspection_categories=[]), Deny)
    assert [r.reason for r in ctx.records] == ["input_injection_crs"]


CONFIG = """
version: 1
classes:
  public:
    input: {crs: {enabled: true, rules: RULES, paranoia: 1}}
apis:
  - name: cms
    owner: cms@example.com
    class: public
    upstream: http://127.0.0.1:9000
    routes:
      - name: article
        path: /article
        methods: [POST]
        POLICY
"""


def _compile(tmp_path: Path, rules: str, policy: str = "", exceptions: str = "") -> object:
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(CONFIG).replace("RULES", rules).replace("POLICY", policy) + exceptions)
    return compile_config(load_config(path), now=NOW)


def _errors(tmp_path: Path, rules: str, policy: str = "") -> list[str]:
    with pytest.raises(ConfigError) as info:
        _compile(tmp_path, rules, policy)
    return [str(d) for d in info.value.diagnostics]


def test_validate_refuses_a_missing_rules_directory(tmp_path: Path) -> None:
    assert any("does not exist" in e for e in _errors(tmp_path, str(tmp_path / "nope")))


def test_validate_names_file_and_line_of_an_unsupported_construct(tmp_path: Path) -> None:
    rules = tmp_path / "crs"
    rules.mkdir()
    (rules / "REQUEST-942-X.conf").write_text('\n# c\nSecRule ARGS "@rx a" "id:1,phase:2,pass,exec:/bin/x"\n')
    assert any("REQUEST-942-X.conf:3: unsupported action exec" in e for e in _errors(tmp_path, str(rules)))


EXCEPTION = """
exceptions:
  - id: EXC-CRS
    target: {api: cms, route: article}
    controls: [input.crs.remove_rules]
    owner: cms-team@example.com
    reason: article bodies are sanitised HTML
    evidence: https://tracker.example.com/SEC-42
    created: 2026-11-01T00:00:00Z
    expires: 2026-12-01T00:00:00Z
"""
REMOVE = ("policy: {input: {crs: {enabled: true, rules: /usr/share/modsecurity-crs/rules, "
          "remove_rules: ['941100']}}}")


def test_rule_removal_is_a_governed_exception(tmp_path: Path) -> None:
    rules = "/usr/share/modsecurity-crs/rules"
    assert any("input.crs.remove_rules" in e for e in _errors(tmp_path, rules, REMOVE))
    compiled = _compile(tmp_path, rules, REMOVE, EXCEPTION)
    route = next(r for r in compiled.routes if r.info.route == "article")  # type: ignore[attr-defined]
    expires = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    during = route.plan(expires - 1)
    assert during.policy.input.crs.remove_rules == ["941100"] and during.exceptions == ("EXC-CRS",)
    assert route.plan(expires).policy.input.crs.remove_rules == []  # enforced again at expiry


REMOVE_TAGS = ("policy: {input: {crs: {enabled: true, rules: /usr/share/modsecurity-crs/rules, "
               "remove_tags: ['attack-xss']}}}")


def test_tag_removal_is_a_governed_exception(tmp_path: Path) -> None:
    rules = "/usr/share/modsecurity-crs/rules"
    assert any("input.crs.remove_tags" in e for e in _errors(tmp_path, rules, REMOVE_TAGS))
    exception = EXCEPTION.replace("input.crs.remove_rules", "input.crs.remove_tags")
    route = next(r for r in _compile(tmp_path, rules, REMOVE_TAGS, exception).routes  # type: ignore[attr-defined]
                 if r.info.route == "article")
    expires = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    during = route.plan(expires - 1)
    assert during.policy.input.crs.remove_tags == ["attack-xss"] and during.exceptions == ("EXC-CRS",)
    assert route.plan(expires).policy.input.crs.remove_tags == []  # enforced again at expiry


def test_explain_names_version_hash_and_skipped_files() -> None:
    from bastion.stages.input.config import CrsPolicy
    from bastion.stages.input.crs.check import explain

    lines = explain(CrsPolicy(enabled=True, paranoia=2, remove_rules=["942100"]))
    assert lines[0].startswith("crs: OWASP_CRS/3.3.4 sha256:") and "paranoia 2" in lines[0]
    assert any("REQUEST-910-IP-REPUTATION.conf" in line for line in lines)
    assert "942100" in lines[-1]
    assert explain(CrsPolicy()) == []
    assert "tags ['attack-sqli']" in explain(CrsPolicy(enabled=True, remove_tags=["attack-sqli"]))[-1]


def test_the_config_hash_covers_the_rule_files(tmp_path: Path) -> None:
    rules = tmp_path / "crs"
    rules.mkdir()
    rule = rules / "REQUEST-942-X.conf"
    rule.write_text('SecRule ARGS "@rx union" "id:1,phase:2,deny"\n')
    first = _compile(tmp_path, str(rules)).config_hash  # type: ignore[attr-defined]
    rule.write_text('SecRule ARGS "@rx select" "id:1,phase:2,deny"\n')
    assert _compile(tmp_path, str(rules)).config_hash != first  # type: ignore[attr-defined]


def test_an_empty_removal_tag_fails_at_config_time() -> None:
    from bastion.stages.input.config import CrsPolicy
    from bastion.stages.input.crs.check import CrsCheck

    with pytest.raises(ValueError, match="remove_tags"):
        CrsCheck(CrsPolicy(enabled=True, remove_tags=[" "]), True, "pid")


@pytest.mark.parametrize("target", ["941100", "941100;", "941100;ARGS:json.a|!!"])
def test_a_malformed_removal_target_fails_at_config_time(target: str) -> None:
    from bastion.stages.input.config import CrsPolicy
    from bastion.stages.input.crs.check import CrsCheck

    with pytest.raises(ValueError):
        CrsCheck(CrsPolicy(enabled=True, remove_targets=[target]), True, "pid")
