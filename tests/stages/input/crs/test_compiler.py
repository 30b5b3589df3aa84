"""Compiling rules: unsupported constructs are errors with file:line; request-independent rules are folded."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.stages.input.crs.compiler import build_program
from bastion.stages.input.crs.engine import Rule
from bastion.stages.input.crs.operators import Operators
from bastion.stages.input.crs.seclang import SecLangError, parse_file


def program(tmp_path: Path, rules: str, paranoia: int = 1, setup: dict[str, str] | None = None):
    path = tmp_path / "REQUEST-950-T.conf"
    path.write_text(rules)
    return build_program(list(parse_file(path).items), Operators(tmp_path), paranoia, setup)


def ids(prog, phase: int) -> list[str]:
    return [r.id for r in prog.phases[phase] if isinstance(r, Rule)]


@pytest.mark.parametrize(("rule", "why"), [
    ('SecRule ARGS "@rx a" "id:1,phase:2,pass,t:utf8toUnicodeX"', "unsupported transformation t:utf8toUnicodeX"),
    ('SecRule ARGS "@rx a" "id:1,phase:2,pass,exec:/bin/x"', "unsupported action exec"),
    ('SecRule RESPONSE_BODY "@rx a" "id:1,phase:2,pass"', "unsupported variable RESPONSE_BODY"),
    ('SecRule ARGS "@rbl x" "id:1,phase:2,pass"', "unsupported operator @rbl"),
    ('SecRule ARGS "@rx a" "id:1,phase:2,pass,ctl:debugLogLevel=9"', "unsupported ctl:debugLogLevel"),
    ('SecRule ARGS "@rx a" "phase:2,pass"', "rule without id"),
    ("SecRule ARGS \"@rx a\" \"id:1,phase:2,pass,tag:'paranoia-level/x'\"",  # found by fuzzing: int() raised
     "tag paranoia-level/x: the level must be a number"),
])
def test_unsupported_constructs_are_errors(tmp_path: Path, rule: str, why: str) -> None:
    with pytest.raises(SecLangError) as err:
        program(tmp_path, "\n" + rule + "\n")
    assert (err.value.file, err.value.line, err.value.why) == ("REQUEST-950-T.conf", 2, why)


def test_gates_on_configuration_only_are_folded(tmp_path: Path) -> None:
    rules = ('SecRule TX:EXECUTING_PARANOIA_LEVEL "@lt 2" "id:1,phase:2,pass,nolog,skipAfter:END-PL"\n'
             'SecRule ARGS "@rx x" "id:2,phase:2,pass"\n'
             'SecMarker END-PL\n'
             'SecRule &TX:crs_exclusions_cms "@eq 0" "id:3,phase:2,pass,nolog,skipAfter:END-CMS"\n'
             'SecRule ARGS "@rx y" "id:4,phase:2,pass"\n'
             'SecMarker END-CMS\n'
             'SecRule ARGS "@rx z" "id:5,phase:2,pass,setvar:tx.dynamic=1"\n'
             'SecRule TX:dynamic "@eq 1" "id:6,phase:2,pass,skipAfter:END-CMS"\n')
    assert ids(program(tmp_path, rules, 1, {"executing_paranoia_level": "1"}), 2) == ["5", "6"]
    assert ids(program(tmp_path, rules, 2, {"executing_paranoia_level": "2"}), 2) == ["2", "5", "6"]


def test_leading_tx_only_rules_run_once_at_compile_time(tmp_path: Path) -> None:
    rules = ('SecRule &TX:crs_setup_version "@eq 0" "id:1,phase:1,deny,log"\n'
             'SecRule &TX:threshold "@eq 0" "id:2,phase:1,pass,nolog,setvar:tx.threshold=5"\n'
             'SecAction "id:3,phase:1,pass,nolog,setvar:tx.score=0"\n'
             'SecRule REQUEST_HEADERS:Host "@rx ." "id:4,phase:1,pass,nolog,setvar:tx.host=1"\n'
             'SecAction "id:5,phase:1,pass,nolog,setvar:tx.later=1"\n'
             'SecRule TX:host|TX:later "@eq 9" "id:6,phase:2,pass"\n')  # reads them: 4 and 5 are not dead
    folded = program(tmp_path, rules, setup={"crs_setup_version": "334"})
    assert ids(folded, 1) == ["4", "5"]  # stops at the first rule that reads the request
    assert folded.initial_tx == {"crs_setup_version": "334", "threshold": "5", "score": "0"}
    unset = program(tmp_path, rules, setup={})
    assert ids(unset, 1)[0] == "1"  # a rule that would deny or log is kept, and folding stops there


def test_rules_that_only_set_unread_tx_names_are_dropped(tmp_path: Path) -> None:
    # 901318 hashes the User-Agent for the persistent IP collection, which nothing here reads
    rules = ('SecRule REQUEST_HEADERS:User-Agent "@rx ^.*$" "id:1,phase:1,pass,nolog,t:sha1,setvar:tx.ua_hash=x"\n'
             'SecRule ARGS "@rx a" "id:2,phase:2,pass,nolog,setvar:tx.read_later=1"\n'
             'SecRule ARGS "@rx b" "id:3,phase:2,pass,nolog,setvar:tx.sqli_score=+5"\n'
             'SecRule TX:read_later "@eq 1" "id:4,phase:2,pass"\n'
             'SecRule IP:REPUT_BLOCK_FLAG "@eq 1" "id:5,phase:2,deny"\n')  # IP is always empty: never matches
    folded = program(tmp_path, rules)
    assert ids(folded, 1) == [] and ids(folded, 2) == ["2", "3", "4"]  # scores are read by the audit
