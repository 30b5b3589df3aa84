"""libinjection through its C API agrees with the wheel's Python functions, value by value."""

from __future__ import annotations

import os
import random

import pytest

from bastion.stages.input.crs import injection
from bench.crs_corpus import PAYLOADS

# characters libinjection's tokenizer treats specially, letters and digits, NUL and a few non-ASCII ones
_ALPHABET = "abcdefghijklmnopqrstuvwxyzORSELCTUNIAD0123456789 '\"`;-#/*()=<>!&|+,.@$:\\{}[]%^~\t\n\x00é中\u0627"
_WORDS = ["select", "union", "or", "and", "1", "'", "\"", "--", "#", "/*", "*/", "(", ")", "=", "<", "script",
          "onerror", "javascript:", "alert", "from", "where", "sleep", "x", " ", "<img", ">", "src", "@@version"]


def _corpus() -> list[str]:
    r = random.Random(14)
    values = [v for payloads in PAYLOADS.values() for v in payloads]
    values += ["", "dark", "8f2a61c0d4b94e3f", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0", "O'Brien",
               "a < b", "a\x00b' or 1=1--", "<scr\x00ipt>alert(1)</script>"]
    values += ["".join(r.choice(_ALPHABET) for _ in range(r.randint(1, 24))) for _ in range(3000)]
    values += [" ".join(r.choice(_WORDS) for _ in range(r.randint(1, 8))) for _ in range(3000)]
    return values


def test_the_c_api_is_used() -> None:
    # the wheel this project pins exports libinjection's C entry points: the fast path is the one measured
    assert injection.NATIVE


@pytest.mark.parametrize("value", ["1' or '1'='1", "1 union select password from users", "admin'--"])
def test_sqli_reports_the_wheels_fingerprint(value: str) -> None:
    data = value.encode()
    assert injection.detect_sqli(data) is not None
    assert injection.detect_sqli(data) == injection.wheel_sqli(data)


def test_benign_values_are_not_injection() -> None:
    for value in ("dark", "O'Brien", "red shoes"):
        assert injection.detect_sqli(value.encode()) is None
        assert not injection.detect_xss(value.encode())
    assert injection.detect_xss(b"<script>alert(1)</script>")


def test_c_api_agrees_with_the_wheel_on_a_generated_corpus() -> None:
    corpus = _corpus()
    sqli_hits = xss_hits = 0
    for value in corpus:
        data = value.encode()
        fingerprint = injection.detect_sqli(data)
        assert fingerprint == injection.wheel_sqli(data), value
        xss = injection.detect_xss(data)
        assert xss == injection.wheel_xss(data), value
        sqli_hits += fingerprint is not None
        xss_hits += xss
    # the corpus exercises both answers of both checks
    assert 100 < sqli_hits < len(corpus) - 100
    assert 20 < xss_hits < len(corpus) - 100


def test_one_call_over_many_texts_finds_every_hit_as_value_by_value() -> None:
    if injection.hits_sqli is None or injection.hits_xss is None:
        assert os.environ.get("BASTION_EXPECT_COMPILED") != "1"
        assert injection.hits_sqli is None and injection.hits_xss is None
        return
    corpus = _corpus()
    r = random.Random(6)
    counts: set[int] = set()
    for _ in range(1500):
        texts = [r.choice(corpus) for _ in range(r.randint(0, 12))]
        sqli, xss = injection.hits_sqli(texts), injection.hits_xss(texts)
        assert sqli == [i for i, t in enumerate(texts) if injection.detect_sqli(t.encode())], texts
        assert xss == [i for i, t in enumerate(texts) if t and injection.detect_xss(t.encode())], texts
        counts.add(min(len(sqli or ()), 2))
    assert counts == {0, 1, 2}  # no hit, one, several: all exercised
    # a text without a UTF-8 form (a lone surrogate) is left to the per-value path, even after a hit
    assert injection.hits_sqli(["1' or '1'='1", "\ud800"]) is None
    assert injection.hits_xss(["<script>alert(1)</script>", "\udfff"]) is None
    assert injection.hits_sqli([]) == injection.hits_xss([""]) == []
    with pytest.raises(TypeError):
        injection.hits_xss([b"bytes"])  # type: ignore[list-item]
