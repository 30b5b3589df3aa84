"""How a route's value of a control compares with its class baseline's."""

from __future__ import annotations

import pytest

from bastion.config.models import Baseline
from bastion.governance.baseline import is_weaker, merge, weakenings


@pytest.mark.parametrize(("stricter", "baseline", "declared", "weaker"), [
    ("true", True, False, True), ("true", False, True, False), ("true", True, True, False),
    ("false", False, True, True), ("false", True, False, False),
    ("lower", 100, 200, True), ("lower", 100, 50, False), ("lower", 100, None, True),
    ("higher", 2, 1, True), ("higher", 2, 3, False),
    ("subset", ["jwt", "mtls"], ["jwt"], False), ("subset", ["jwt"], ["jwt", "api_key"], True),
    ("superset", ["a"], ["a", "b"], False), ("superset", ["a", "b"], ["a"], True),
    ("free", 1, 2, False),
    (None, "x", "y", True), (None, "x", "x", False),
])
def test_is_weaker(stricter, baseline, declared, weaker):
    assert is_weaker(stricter, baseline, declared) is weaker


def test_order():
    order = ["optional", "required"]
    assert is_weaker("order", "required", "optional", order)
    assert not is_weaker("order", "optional", "required", order)


def test_merge_tracks_origin_and_weakenings_name_the_layer():
    base = Baseline().model_dump()
    merged, sources = merge(base, ("api:a", {"traffic": {"max_body_bytes": 10}}),
                            ("route:a/r", {"identity": {"required": False}}))
    declared = Baseline.model_validate(merged)
    assert sources == {"traffic.max_body_bytes": "api:a", "identity.required": "route:a/r"}
    found = weakenings(Baseline(), declared, sources)
    assert [(w.control, w.origin) for w in found] == [("identity.required", "route:a/r")]


def test_nested_controls_merge_deeply_and_compare_with_containment():
    base = Baseline.model_validate({"traffic": {"ip": {"allow": ["10.0.0.0/8"], "deny": ["10.66.0.0/16"]}}})
    tighter, sources = merge(base.model_dump(mode="json"), ("route:a/r", {"traffic": {"ip": {"allow": ["10.1.0.0/16"]}}}))
    assert tighter["traffic"]["ip"]["deny"] == ["10.66.0.0/16"]  # untouched sibling kept
    assert sources == {"traffic.ip.allow": "route:a/r"}
    assert weakenings(base, Baseline.model_validate(tighter), sources) == []
    wider, sources = merge(base.model_dump(mode="json"), ("api:a", {"traffic": {"ip": {"allow": ["0.0.0.0/0"], "deny": []}}}))
    found = weakenings(base, Baseline.model_validate(wider), sources)
    assert sorted((w.control, w.origin) for w in found) == [("traffic.ip.allow", "api:a"), ("traffic.ip.deny", "api:a")]
