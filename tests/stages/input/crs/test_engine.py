"""Transaction semantics on small rule files, each checked against what ModSecurity v3 does."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from bastion.stages.input.crs import injection
from bastion.stages.input.crs.compiler import build_program
from bastion.stages.input.crs.engine import Outcome, Transaction
from bastion.stages.input.crs.operators import Operators
from bastion.stages.input.crs.program import Program, Rule
from bastion.stages.input.crs.request import CrsRequest, Part, flatten_json, from_parts
from bastion.stages.input.crs.ruleset import DEFAULT_RULES_DIR, CrsEngine, crs_engine, load_ruleset
from bastion.stages.input.crs.seclang import VarSpec, parse_file
from bench.crs_corpus import attack_corpus
from bench.crs_reference import crs_request
from tests.stages.input.crs.conftest import requires_crs

DENY = 'SecRule TX:score "@ge %{tx.limit}" "id:99,phase:2,deny"\n'


def evaluate(tmp_path: Path, rules: str, request: CrsRequest, tx: dict[str, str] | None = None,
             paranoia: int = 4) -> Outcome:
    path = tmp_path / "REQUEST-950-T.conf"
    path.write_text(rules)
    program = build_program(list(parse_file(path).items), Operators(tmp_path), paranoia)
    return Transaction(program, request, {"limit": "2", **(tx or {})}).run()


def get(target: str, headers: list[tuple[str, str]] | None = None) -> CrsRequest:
    return from_parts("GET", target, "1.1", headers or [("Host", "h")])


def ids(outcome: Outcome) -> list[str]:
    return [h.rule_id for h in outcome.hits]


def test_setvar_runs_once_per_matched_value(tmp_path: Path) -> None:
    rules = 'SecRule ARGS "@rx attack" "id:1,phase:2,pass,setvar:tx.score=+1"\n' + DENY
    assert evaluate(tmp_path, rules, get("/?a=attack&b=attack")).denied_by == "99"
    assert evaluate(tmp_path, rules, get("/?a=attack&b=fine")).denied_by is None


def test_exclusion_and_selector(tmp_path: Path) -> None:
    rules = ('SecRule REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/ "@rx evil" "id:1,phase:2,pass,setvar:tx.score=+2"\n'
             + DENY)
    assert evaluate(tmp_path, rules, get("/", [("Cookie", "__utmz=evil")])).denied_by is None
    assert evaluate(tmp_path, rules, get("/", [("Cookie", "sid=evil")])).denied_by == "99"


def test_chain_reads_the_parents_matched_vars_and_captures(tmp_path: Path) -> None:
    rules = ('SecRule ARGS "@rx ^(\\w+):" "id:1,phase:2,pass,capture,chain,setvar:tx.score=+1"\n'
             '  SecRule TX:1 "@streq admin" "setvar:tx.score=+1"\n' + DENY)
    assert evaluate(tmp_path, rules, get("/?a=admin:x")).denied_by == "99"
    assert evaluate(tmp_path, rules, get("/?a=guest:x")).denied_by is None


def test_skip_after_and_markers(tmp_path: Path) -> None:
    rules = ('SecRule REQUEST_METHOD "@streq GET" "id:1,phase:2,pass,nolog,skipAfter:END"\n'
             'SecRule ARGS "@rx ." "id:2,phase:2,pass,setvar:tx.score=+5"\n'
             'SecMarker END\n' + DENY)
    assert evaluate(tmp_path, rules, get("/?a=x")).denied_by is None


def test_paranoia_gates_are_folded(tmp_path: Path) -> None:
    rules = ('SecRule TX:EXECUTING_PARANOIA_LEVEL "@lt 2" "id:1,phase:2,pass,nolog,skipAfter:END-PL"\n'
             'SecRule ARGS "@rx x" "id:2,phase:2,pass,tag:\'paranoia-level/2\',setvar:tx.score=+5"\n'
             'SecMarker END-PL\n' + DENY)
    assert evaluate(tmp_path, rules, get("/?a=x"), paranoia=1).denied_by is None
    assert evaluate(tmp_path, rules, get("/?a=x"), paranoia=2).denied_by == "99"


def test_ctl_rule_remove_by_id_and_target(tmp_path: Path) -> None:
    rules = ('SecRule REQUEST_FILENAME "@streq /cms" "id:1,phase:1,pass,nolog,ctl:ruleRemoveTargetById=3;ARGS:html"\n'
             'SecRule REQUEST_FILENAME "@streq /off" "id:2,phase:1,pass,nolog,ctl:ruleRemoveById=3"\n'
             'SecRule ARGS "@rx <script" "id:3,phase:2,pass,setvar:tx.score=+5"\n' + DENY)
    assert evaluate(tmp_path, rules, get("/cms?html=<script>")).denied_by is None
    assert evaluate(tmp_path, rules, get("/cms?other=<script>")).denied_by == "99"
    assert evaluate(tmp_path, rules, get("/off?other=<script>")).denied_by is None


def test_count_and_multimatch(tmp_path: Path) -> None:
    rules = ('SecRule &ARGS "@gt 2" "id:1,phase:2,pass,setvar:tx.score=+1"\n'
             'SecRule ARGS "@rx ^<" "id:2,phase:2,pass,multiMatch,t:none,t:urlDecode,setvar:tx.score=+1"\n' + DENY)
    assert evaluate(tmp_path, rules, get("/?a=1&b=2&c=%253c")).denied_by == "99"  # %3c after one decode
    assert evaluate(tmp_path, rules, get("/?a=1&b=2")).denied_by is None


def test_transformations_apply_and_hits_name_the_variable(tmp_path: Path) -> None:
    rules = 'SecRule ARGS "@rx <script" "id:1,phase:2,pass,t:none,t:htmlEntityDecode,t:lowercase,msg:\'x\'"\n'
    req = from_parts("POST", "/", "1.1", [], processor="JSON",
                     body_args=flatten_json({"user": {"bio": ["&lt;SCRIPT&gt;"]}}))
    out = evaluate(tmp_path, rules, req)
    assert [(h.rule_id, h.variable) for h in out.hits] == [("1", "ARGS:json.user.bio.array_0")]


def test_request_variables_as_modsecurity_names_them() -> None:
    req = from_parts("POST", "/p%61th/a%20b/c.php?x=a+b&z%5B%5D=%41%u0041", "1.1",
                     [("Host", "h"), ("Cookie", "a=1; b=%41x")], processor="MULTIPART",
                     parts=[Part("t", None, "hello"), Part("f", "a.php", "")])
    assert req.scalars["REQUEST_FILENAME"] == "/path/a b/c.php"
    assert req.scalars["REQUEST_BASENAME"] == "c.php"
    assert req.scalars["REQUEST_URI"] == "/path/a b/c.php?x=a+b&z[]=A%u0041"
    assert req.pairs("ARGS") == [("x", "a b"), ("z[]", "A%u0041"), ("t", "hello")]
    assert req.pairs("REQUEST_COOKIES") == [("a", "1"), ("b", "%41x")]
    assert req.pairs("FILES") == [("f", "a.php")] and req.pairs("FILES_NAMES") == [("f", "f")]
    assert flatten_json({"a": {"arr": [1, "x", {"k": True}]}, "n": None, "e": []}) == [
        ("json.a.arr.array_0", "1"), ("json.a.arr.array_1", "x"), ("json.a.arr.array_2.k", "true"), ("json.n", "")]


def test_ctl_rule_remove_by_tag_in_a_rule_file(tmp_path: Path) -> None:
    rules = ('SecRule REQUEST_FILENAME "@beginsWith /docs" "id:1,phase:1,pass,nolog,ctl:ruleRemoveByTag=attack-sqli"\n'
             'SecRule ARGS "@rx union" "id:2,phase:2,pass,tag:attack-sqli,setvar:tx.score=+5"\n'
             'SecRule ARGS "@rx script" "id:3,phase:2,pass,tag:attack-xss,setvar:tx.score=+5"\n' + DENY)
    assert evaluate(tmp_path, rules, get("/api?q=union")).denied_by == "99"
    assert evaluate(tmp_path, rules, get("/docs?q=union")).denied_by is None  # the tag's rules are off here
    assert evaluate(tmp_path, rules, get("/docs?q=script")).denied_by == "99"  # other tags still run


# ---------------------------------------------------------------- the Set prefilter's walk
# A request visits only markers, rules without a prefilter and the rules some Set reported (Transaction._walks):
# on the real CRS, that must decide exactly as walking every rule does. Requests are generated from fragments
# that trip the transformations (encodings, entities, escapes, NUL, the joining SEPARATOR) and many rule
# families, with a fixed seed (the test is repeatable), and taken from the attack corpus.
_FRAGMENTS = (
    "a", "red shoes", " ", "'", '"', "--", "/*", "*/", "#", ";", "|", "`", "$(", "${jndi:ldap://x}", "<", ">",
    "<script>", "onerror=", "javascript:", "&lt;", "&#x3c;", "\\x3c", "\\u003c", "%3C", "%27", "%u0027",
    "%2e%2e%2f", "../", "..\\", "/etc/passwd", "cmd.exe", "union select", "or 1=1", "sleep(5)", "@@version",
    "\x00", "\uffff", "\x1b", "%1b", "&#27;", "\\x1b", "\n", "é", "\u0627", "Die \"Union von Europa\"", "C:\\Windows\\System32", "cat /etc/pa[s]swd",
    "+ADw-script+AD4-", "PHNjcmlwdD4=", "ping -c 1", "<?php", "eval(", "{{7*7}}", "%00", "a=b", "&", "?",
)


def _random_request(rng: random.Random) -> CrsRequest:
    def text() -> str:
        return "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(0, 4)))
    query = "&".join(f"{quote(text())}={quote(text())}" for _ in range(rng.randint(0, 3)))
    headers = [("Host", "api.example"), ("User-Agent", text() or "curl/8"), ("Cookie", f"s={quote(text())}")]
    path = "/api/" + quote(text(), safe="/")
    if rng.random() < 0.5:
        return from_parts("GET", path + ("?" + query if query else ""), "1.1", headers)
    body = {text(): text(), "n": {"x": [text(), rng.randint(0, 9)]}}
    return from_parts("POST", path, "1.1", [*headers, ("Content-Type", "application/json")], processor="JSON",
                      body_args=flatten_json(body), body=orjson.dumps(body))


def _every_rule(program: Program) -> Program:
    return Program(program.phases, program.sets, program.rules, program.group_targets, program.initial_tx, None)


def _decision(outcome: Outcome) -> tuple[object, ...]:
    return (outcome.denied_by, [(h.rule_id, h.variable, h.value) for h in outcome.hits], outcome.tx)


@requires_crs
@pytest.mark.parametrize("paranoia", [1, 4])
def test_the_prefilter_walk_decides_as_walking_every_rule(paranoia: int) -> None:
    program = crs_engine(str(DEFAULT_RULES_DIR), paranoia, 5).program
    assert program.prefilter is not None
    reference = _every_rule(program)
    rng = random.Random(14)
    requests = [_random_request(rng) for _ in range(250)] + [crs_request(r) for r in attack_corpus()[::40]]
    skipped = 0
    for request in requests:
        fast = Transaction(program, request, program.initial_tx)
        assert _decision(fast.run()) == _decision(Transaction(reference, request, program.initial_tx).run())
        walked = fast._walks()
        skipped += sum(len(program.phases[n]) - len(walked[n]) for n in walked)
    assert skipped > len(requests) * 50  # the walk really leaves rules out (not a vacuous comparison)
    assert sum(Transaction(program, r, program.initial_tx).run().denied_by is not None for r in requests) > 50


@pytest.mark.parametrize("selector", ["/^header_name_/", "/^HEADER_NAME_/", "/^rfi_/", "/^x1_/", "/^ks/", "/^i/"])
def test_a_literal_prefix_selector_selects_as_its_case_insensitive_search(selector: str) -> None:
    keys = ["header_name_host", "HEADER_NAME_X", "Header_Name_", "header_name", "xheader_name_a", "rfi_a",
            "RFI_B", "x1_", "X1_", "\u212as", "k\u017f", "KS", "\u0130", "\u0131", "i", "I", ""]
    search = re.compile(selector[1:-1], re.IGNORECASE).search
    program = Program({1: [], 2: []}, {})
    tx = Transaction(program, CrsRequest(), {k: "1" for k in keys})
    chosen = tx._select(VarSpec("TX", selector))
    assert [k for k, _ in chosen] == [k for k in keys if search(k) is not None]


def _fresh(paranoia: int) -> Program:
    """A program of its own (`crs_engine` is cached: changing its rules would change every other test's)."""
    return CrsEngine(load_ruleset(str(DEFAULT_RULES_DIR)), paranoia, 5).program


def _rules(program: Program) -> list[Rule]:
    out: list[Rule] = []
    for items in program.phases.values():
        for item in items:
            if isinstance(item, Rule):
                out += [item, *item.chained]
    return out


def _per_value(program: Program) -> Program:
    """The same program with libinjection called value by value (no one-call check on any rule)."""
    for rule in _rules(program):
        rule.injection_hits = None
    return program


def _without_set_answers(program: Program) -> Program:
    """The same program with every rule matching each value with its own regex: no rule reads a Set's answer
    per value (the Sets still choose which rules run)."""
    for rule in _rules(program):
        rule.set_index = -1
    return program


@requires_crs
def test_the_one_call_libinjection_check_decides_as_value_by_value() -> None:
    program = crs_engine(str(DEFAULT_RULES_DIR), 1, 5).program
    rules = [item for items in program.phases.values() for item in items if isinstance(item, Rule)]
    batched = {r.id for r in rules if r.injection_hits is not None}
    if injection.hits_sqli is None:  # the pure build: no rule may be wired to the missing helper
        assert os.environ.get("BASTION_EXPECT_COMPILED") != "1"
        assert batched == set()
        return
    assert {"942100", "941100"} <= batched
    reference = _per_value(_fresh(1))
    assert all(r.injection_hits is None for r in _rules(reference))
    assert program is not reference and any(r.injection_hits is not None for r in _rules(program))
    rng = random.Random(41)
    requests = [_random_request(rng) for _ in range(250)] + [crs_request(r) for r in attack_corpus()[::25]]
    found = set()
    for request in requests:
        outcome = Transaction(program, request, program.initial_tx).run()
        assert _decision(outcome) == _decision(Transaction(reference, request, program.initial_tx).run())
        found.update(h.rule_id for h in outcome.hits if h.rule_id in batched)
    assert {"942100", "941100"} <= found  # both libinjection rules matched somewhere: not a vacuous comparison


@requires_crs
@pytest.mark.parametrize("paranoia", [1, 4])
def test_the_set_answer_per_value_decides_as_each_rules_own_regex(paranoia: int) -> None:
    """`_match_set_rule` (each value's Set answer, computed once for the rules that read the same values, and
    the rule's regex only for the captures of a matching value) against every rule's own regex on every value."""
    program = crs_engine(str(DEFAULT_RULES_DIR), paranoia, 5).program
    reference = _without_set_answers(_fresh(paranoia))
    in_sets = {r.id for r in _rules(program) if r.set_index >= 0}
    assert len(in_sets) > 50 and all(r.set_index == -1 for r in _rules(reference))
    rng = random.Random(1414)
    requests = [_random_request(rng) for _ in range(250)] + [crs_request(r) for r in attack_corpus()[::20]]
    several = 0
    for request in requests:
        fast = Transaction(program, request, program.initial_tx)
        assert _decision(fast.run()) == _decision(Transaction(reference, request, program.initial_tx).run())
        several += sum(len(rows) > 1 for _, _, rows in fast._set_rows_cache.values())
    assert several > 100  # the Set rows path ran on several values (not a vacuous comparison)


@pytest.mark.parametrize("actions", ["capture,t:none,t:urlDecodeUni,multiMatch", "t:none,t:urlDecodeUni,multiMatch",
                                     "capture,t:none,t:urlDecodeUni", "t:none"])
@pytest.mark.parametrize("operator", ["@detectSQLi", "@detectXSS"])
def test_libinjection_on_several_values_decides_as_value_by_value(tmp_path: Path, operator: str,
                                                                  actions: str) -> None:
    """Every value libinjection calls injection (directly or after a transformation) matches, with its own
    captures and setvars, whether the one C call chose the values or each was checked on its own."""
    rules = (f'SecRule ARGS "{operator}" "id:1,phase:2,pass,{actions},setvar:tx.score=+1,'
             'setvar:tx.last=%{MATCHED_VAR_NAME},setvar:tx.fp=%{TX.0}"\n')
    args = {"a": "plain", "b": "1' or '1'='1", "c": "<script>alert(1)</script>", "d": "1%27%20or%20%271%27%3D%271",
            "e": "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "f": "", "g": "x' union select 1--",
            "h": "<img src=x onerror=alert(1)>"}
    req = from_parts("POST", "/", "1.1", [], processor="JSON", body_args=flatten_json(args))
    path = tmp_path / "REQUEST-950-T.conf"
    path.write_text(rules)
    outcomes = []
    for one_call in (True, False):
        program = build_program(list(parse_file(path).items), Operators(tmp_path), 4)
        if not one_call:
            _per_value(program)
        outcomes.append(Transaction(program, req, {}).run())
    assert _decision(outcomes[0]) == _decision(outcomes[1])
    assert int(outcomes[0].tx["score"]) >= 2  # several values matched
