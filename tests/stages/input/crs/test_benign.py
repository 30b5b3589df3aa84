"""False positives on generated benign API traffic (faker, twelve locales): Bastion API-aware vs ModSecurity.

CI runs one request per scenario and locale; `python bench/crs_benign.py 20` gives the figures in the docs.
"""

from __future__ import annotations

import pytest

from bench.crs_benign import FREE_TEXT_FIELDS, LOCALES, SCENARIOS, bastion_blocks, benign_corpus
from bench.crs_reference import Bastion, ModSecurity
from tests.stages.input.crs.conftest import requires_crs

pytest.importorskip("faker")
pytest.importorskip("libmodsecurity")


@requires_crs
def test_api_aware_crs_blocks_a_tenth_of_modsecuritys_false_positives_at_most() -> None:
    corpus = benign_corpus(per_cell=1)
    assert len(corpus) == len(SCENARIOS) * len(LOCALES)
    modsec, ours = ModSecurity(1), Bastion(1)
    reference = [modsec.run(req)[0] for _, _, req, _ in corpus]
    scoped = [bastion_blocks(ours, scenario, req, doc) for scenario, _, req, doc in corpus]
    assert sum(reference) >= len(corpus) // 4  # the corpus is hard enough to make ModSecurity block
    assert sum(scoped) <= sum(reference) // 10
    free_text = [blocked for (scenario, _, _, _), blocked in zip(corpus, scoped, strict=True)
                 if scenario in FREE_TEXT_FIELDS]
    assert sum(free_text) <= len(free_text) // 100  # <= 1% (0 of the 36 here)


@requires_crs
def test_unicode_text_is_not_read_as_quotes() -> None:
    """ModSecurity's utf8toUnicode + urlDecodeUni keep the low byte: the Arabic alef U+0627 becomes `'`, and
    `\u0627 or \u0627\u0627 = \u0627` reads as the tautology `' or '' = '`. Bastion decodes Unicode correctly (a listed deviation)."""
    from bench.crs_reference import Request

    body = '{"text": "\u0627 or \u0627\u0627 = \u0627"}'.encode()  # Arabic alef, raw UTF-8 in the body
    req = Request("POST", "/api/review", (("Host", "api.example"), ("Content-Type", "application/json"),
                                          ("Content-Length", str(len(body)))), body)
    assert ModSecurity(1).run(req) == (True, frozenset({"942100", "949110"}))
    assert Bastion(1).run(req) == (False, frozenset())
