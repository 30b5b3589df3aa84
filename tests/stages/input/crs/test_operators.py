from __future__ import annotations

from pathlib import Path

import pytest

from bastion.stages.input.crs.operators import BACKTRACK_LIMIT, Operators
from bastion.stages.input.crs.ruleset import DEFAULT_RULES_DIR, load_ruleset
from bastion.stages.input.crs.seclang import Marker, OperatorSpec, SecLangError
from tests.stages.input.crs.conftest import requires_crs


def run(name: str, argument: str, value: str, negated: bool = False, rule_id: str = "1",
        data: Path = Path("/nonexistent"), tx: dict[str, str] | None = None) -> tuple[str, ...] | None:
    match = Operators(data).build(OperatorSpec(name, argument, negated), rule_id, "f.conf", 7)
    values = tx or {}
    return match(value, lambda text: text.replace("%{tx.x}", values.get("x", "")))


@pytest.mark.parametrize(("name", "argument", "value", "matches"), [
    ("rx", r"(?i)union\s+select", "1 UNION  select", True),
    ("rx", r"^b$", "a\nb", True),                      # ModSecurity v3 compiles with MULTILINE
    ("rx", r"a.b", "a\nb", True),                      # and DOTALL
    ("rx", r"^abc$", "xabc", False),
    ("pm", "select union", "xxSeLeCtyy", True),
    ("pm", "select union", "selec", False),
    ("detectSQLi", "", "1' or '1'='1", True),
    ("detectSQLi", "", "O'Brien", False),
    ("detectXSS", "", "<script>alert(1)</script>", True),
    ("detectXSS", "", "a < b", False),
    ("within", "GET HEAD POST", "POST", True),
    ("within", "GET HEAD POST", "PUT", False),
    ("contains", "..", "a/../b", True),
    ("beginsWith", "/adm", "/admin", True),
    ("endsWith", ".php", "/x.php", True),
    ("endsWith", ".php", "/x.phps", False),
    ("streq", "abc", "abc", True),
    ("streq", "abc", "abcd", False),
    ("eq", "0", "0", True),
    ("eq", "0", "", True),                             # atoi(""), as ModSecurity
    ("ge", "5", "12", True),
    ("gt", "5", "5", False),
    ("lt", "2", "1", True),
    ("validateUrlEncoding", "", "a%2x", True),
    ("validateUrlEncoding", "", "a%20b%", True),
    ("validateUrlEncoding", "", "a%20b", False),
    ("validateUtf8Encoding", "", "bad \ufffd", True),
    ("validateByteRange", "32-126", "abc", False),
    ("validateByteRange", "32-126", "a\x01", True),
    ("validateByteRange", "1-255", "é", False),
    ("ipMatch", "127.0.0.1,10.0.0.0/8,::1", "10.1.2.3", True),
    ("ipMatch", "127.0.0.1,10.0.0.0/8", "11.0.0.1", False),
    ("ipMatch", "127.0.0.1,10.0.0.0/8,::1", "127.0.0.1", True),       # a single address: equal text
    ("ipMatch", "127.0.0.1,::1", "0:0:0:0:0:0:0:1", True),           # or equal once parsed
    ("ipMatch", "127.0.0.1", "not an address", False),
    ("unconditionalMatch", "", "", True),
])
def test_operator(name: str, argument: str, value: str, matches: bool) -> None:
    assert (run(name, argument, value) is not None) is matches


def test_negation_and_macros() -> None:
    assert run("eq", "0", "1", negated=True) is not None
    assert run("ge", "%{tx.x}", "5", tx={"x": "5"}) is not None
    assert run("ge", "%{tx.x}", "4", tx={"x": "5"}) is None
    assert run("rx", "^%{tx.x}$", "abc", tx={"x": "abc"}) is not None  # a pattern built per transaction
    assert run("rx", "^%{tx.x}$", "abcd", tx={"x": "abc"}) is None


def test_rx_returns_captures() -> None:
    assert run("rx", r"(\w+)=(\d+)", "a=1") == ("a=1", "a", "1")


def test_pm_from_file_reads_phrases_beside_the_rules(tmp_path: Path) -> None:
    (tmp_path / "words.data").write_text("# comment\n\n/etc/passwd\n.ssh/id_rsa\n")
    assert run("pmFromFile", "words.data", "cat ~/.SSH/id_rsa", data=tmp_path) is not None
    assert run("pmFromFile", "words.data", "etc", data=tmp_path) is None
    with pytest.raises(SecLangError, match=r"missing\.data not found"):
        run("pmFromFile", "missing.data", "x", data=tmp_path)


def test_unsupported_operator_and_regex_are_errors_with_file_and_line() -> None:
    with pytest.raises(SecLangError) as err:
        run("geoLookup", "", "1.2.3.4")
    assert (err.value.file, err.value.line) == ("f.conf", 7)
    with pytest.raises(SecLangError, match="RE2 cannot run"):
        run("rx", r"(a)\1", "aa", rule_id="123")


def test_the_three_crs33_patterns_re2_cannot_compile() -> None:
    # 920120: `;` only counts when it does not end an accepted HTML entity
    lookbehind = (r"(?<!&(?:[aAoOuUyY]uml)|&(?:[aAeEiIoOuU]circ)|&(?:[eEiIoOuUyY]acute)|&(?:[aAeEiIoOuU]grave)|"
                  r"&(?:[cC]cedil)|&(?:[aAnNoO]tilde)|&(?:amp)|&(?:apos));|['\"=]")
    assert run("rx", lookbehind, "r&eacute;sum&eacute;.pdf", rule_id="920120") is None
    assert run("rx", lookbehind, "a;b.pdf", rule_id="920120") is not None
    # 942130: SQL tautology with the same word on both sides (a back-reference)
    tautology = (r"(?i:[\s'\"`()]*?\b([\d\w]+)\b[\s'\"`()]*?(?:<(?:=(?:[\s'\"`()]*?(?!\b\1\b)[\d\w]+|>[\s'\"`()]*?"
                 r"(?:\b\1\b))|>?[\s'\"`()]*?(?!\b\1\b)[\d\w]+)|(?:not\s+(?:regexp|like)|is\s+not|>=?|!=|\^)"
                 r"[\s'\"`()]*?(?!\b\1\b)[\d\w]+|(?:(?:sounds\s+)?like|r(?:egexp|like)|=)[\s'\"`()]*?(?:\b\1\b)))")
    assert run("rx", tautology, "' or 1=1", rule_id="942130") is not None
    assert run("rx", tautology, "hello world", rule_id="942130") is None
    # bounded: a long value only reaches the backtracking engine up to BACKTRACK_LIMIT characters
    assert run("rx", tautology, "a " * BACKTRACK_LIMIT + "x=x", rule_id="942130") is None
    # 942260: the possessive `++` runs as `+` (exact for that character class)
    possessive = r"(?i:[\"'`]\s*?[^?\w\s=.,;)(]++\s*?[(@\"'`]*?\s*?\w+\W+\w)"
    assert run("rx", possessive, "'@@version x", rule_id="942260") is not None


@requires_crs
def test_rx_without_capture_decides_as_the_search_with_groups() -> None:
    # a rule without `capture` gets the match/no-match form (a one-pattern RE2 Set): on every static @rx of
    # the installed CRS it must decide as the full search does, on attack payloads and ordinary values
    from bench.crs_corpus import PAYLOADS

    values = [v for payloads in PAYLOADS.values() for v in payloads]
    values += ["", "dark", "GET /api/items?page=2 HTTP/1.1", "application/json", "text/html,*/*;q=0.8",
               "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0", "a\nb", "en-GB,en;q=0.8", "/etc/passwd", "0"]
    operators = Operators(DEFAULT_RULES_DIR)
    specs = [s for item in load_ruleset(str(DEFAULT_RULES_DIR)).items if not isinstance(item, Marker)
             for s in (item, *item.chained) if s.operator.name == "rx" and "%{" not in s.operator.argument]
    assert len(specs) > 100
    checked = 0
    for spec in specs:
        rule_id = spec.action("id") or ""
        full = operators.build(spec.operator, rule_id, spec.file, spec.line, capture=True)
        exists = operators.build(spec.operator, rule_id, spec.file, spec.line, capture=False)
        for value in values:
            assert (full(value, str) is None) == (exists(value, str) is None), (rule_id, value)
            checked += full(value, str) is not None
    assert checked > 50  # both answers occur
