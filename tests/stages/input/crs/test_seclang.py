from __future__ import annotations

from pathlib import Path

import pytest

from bastion.stages.input.crs.seclang import (
    Action,
    Marker,
    SecLangError,
    VarSpec,
    parse_actions,
    parse_file,
    parse_operator,
    parse_variables,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("ARGS", [VarSpec("ARGS", None)]),
    ("REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|XML:/*", [
        VarSpec("REQUEST_COOKIES", None), VarSpec("REQUEST_COOKIES", "/__utm/", exclude=True),
        VarSpec("XML", "/*")]),
    ("&TX:paranoia_level", [VarSpec("TX", "paranoia_level", count=True)]),
    ("REQUEST_HEADERS:User-Agent|ARGS:'a|b'", [VarSpec("REQUEST_HEADERS", "User-Agent"), VarSpec("ARGS", "a|b")]),
    ("TX:/^(?:a|b)$/|ARGS_NAMES", [VarSpec("TX", "/^(?:a|b)$/"), VarSpec("ARGS_NAMES", None)]),
    ("request_headers:/a/b/", [VarSpec("REQUEST_HEADERS", "/a/b/")]),
])
def test_variables(text: str, expected: list[VarSpec]) -> None:
    assert list(parse_variables(text, "f", 1)) == expected


def test_actions_split_on_commas_outside_quotes() -> None:
    actions = parse_actions("id:1,phase:2,msg:'a, b',setvar:'tx.x=+%{tx.y}',t:none,t:lowercase,chain", "f", 1)
    assert actions == (Action("id", "1"), Action("phase", "2"), Action("msg", "a, b"),
                       Action("setvar", "tx.x=+%{tx.y}"), Action("t", "none"), Action("t", "lowercase"),
                       Action("chain"))


@pytest.mark.parametrize(("text", "name", "arg", "neg"), [
    ("@rx ^a b$", "rx", "^a b$", False),
    ("!@eq 0", "eq", "0", True),
    ("^implicit", "rx", "^implicit", False),
    ("@unconditionalMatch", "unconditionalMatch", "", False),
])
def test_operator(text: str, name: str, arg: str, neg: bool) -> None:
    op = parse_operator(text)
    assert (op.name, op.argument, op.negated) == (name, arg, neg)


def test_file_with_continuations_chains_and_markers(tmp_path: Path) -> None:
    path = tmp_path / "REQUEST-999-T.conf"
    path.write_text('# comment\nSecComponentSignature "X/1.0"\n'
                    'SecRule ARGS "@rx a\\"b" \\\n    "id:1,\\\n    phase:2,chain"\n'
                    '    SecRule MATCHED_VARS "@rx c" "t:none"\n'
                    'SecMarker "END"\n'
                    'SecAction "id:2,phase:1,pass,setvar:tx.x=1"\n')
    parsed = parse_file(path)
    assert parsed.signature == "X/1.0"
    rule, marker, action = parsed.items
    assert not isinstance(rule, Marker) and rule.line == 3 and rule.operator.argument == 'a"b'
    assert len(rule.chained) == 1 and rule.chained[0].variables[0].collection == "MATCHED_VARS"
    assert marker == Marker("REQUEST-999-T.conf", 7, "END")
    assert not isinstance(action, Marker) and action.operator.name == "unconditionalMatch"


@pytest.mark.parametrize(("text", "line", "why"), [
    ('SecRule ARGS "@rx a" "id:1"\nSecFooBar On\n', 2, "unsupported directive SecFooBar"),
    ('SecRule ARGS "@rx a" "id:1,chain"\n', 1, "chain"),
    ('SecRule ARGS "@rx a" "id:1,msg:\'x"\n', 1, "unterminated quote"),
    ('\n\nSecRule ARGS "@rx a\n', 3, "unterminated quoted argument"),
])
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, why: str) -> None:
    path = tmp_path / "REQUEST-999-BAD.conf"
    path.write_text(text)
    with pytest.raises(SecLangError) as err:
        parse_file(path)
    assert (err.value.file, err.value.line) == ("REQUEST-999-BAD.conf", line)
    assert why in err.value.why


@pytest.mark.parametrize(("raw", "line"), [
    (b'SecRule ARGS "@rx \xe4\xb8" "id:1"\n', 1),  # fuzz/corpus/seclang/edge-not-utf8: was UnicodeDecodeError
    (b'# comment\r\nSecRule ARGS "@rx a" "id:1"\n\n  "id:2,msg:\'\xff\'"\n', 4),
])
def test_a_file_that_is_not_utf8_is_a_diagnostic_at_its_line(tmp_path: Path, raw: bytes, line: int) -> None:
    path = tmp_path / "REQUEST-999-BAD.conf"
    path.write_bytes(raw)
    with pytest.raises(SecLangError) as err:
        parse_file(path)
    assert (err.value.file, err.value.line, err.value.why) == ("REQUEST-999-BAD.conf", line, "not UTF-8")
