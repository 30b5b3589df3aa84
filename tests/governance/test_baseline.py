"""How a route's value of a control compares with its class baseline's."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import BaseModel

from bastion.config.models import SECTIONS, Baseline
from bastion.governance.baseline import _origin_below, is_weaker, merge, restore, weakenings


@pytest.mark.parametrize(("stricter", "baseline", "declared", "weaker"), [
    ("true", True, False, True), ("true", False, True, False), ("true", True, True, False),
    ("false", False, True, True), ("false", True, False, False),
    ("lower", 100, 200, True), ("lower", 100, 50, False), ("lower", 100, None, True),
    ("higher", 2, 1, True), ("higher", 2, 3, False),
    ("subset", ["jwt", "mtls"], ["jwt"], False), ("subset", ["jwt"], ["jwt", "api_key"], True),
    ("superset", ["a"], ["a", "b"], False), ("superset", ["a", "b"], ["a"], True),
    ("free", 1, 2, False),
    # another CRS rules directory is not comparable: any change needs an exception; the same one is not weaker
    ("equal", "/usr/share/modsecurity-crs/rules", "/tmp/empty", True), ("equal", "/a", "/a", False),
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


@pytest.mark.parametrize(("stricter", "baseline", "declared", "order", "weaker"), [
    ("true", False, None, None, False),  # nothing was required: nothing can be weakened
    ("false", None, False, None, False),
    (None, "x", None, None, True),  # unannotated: any change is weaker, to and from nothing too
    (None, None, "y", None, True),
    (None, {"a": 1}, {"a": 2}, None, True), (None, {"a": [1]}, {"a": [1]}, None, False),
    (None, [1, 2], [1, 3], None, True), (None, ("a",), ["a"], None, False),
    (None, "a", "b", ["a", "b"], True),  # an order is used only for stricter="order"
    ("order", "closed", "open", ["open", "closed"], True), ("order", "open", "closed", ["open", "closed"], False),
    ("subset", ["10.0.0.0/8"], ["10.1.2.3/16"], None, False),  # host bits set: still inside
    ("subset", ["10.0.0.1/8"], ["10.1.0.0/16"], None, False),
    ("subset", ["not-a-network", "10.0.0.0/8"], ["10.1.0.0/16"], None, False),  # one bad entry skips only itself
    ("subset", ["10.0.0.0/8"], ["not-a-network"], None, True),
    ("subset", ["::/0"], ["10.0.0.0/8"], None, True),  # an IPv6 network never holds an IPv4 one
])
def test_is_weaker_edges(stricter, baseline, declared, order, weaker):
    assert is_weaker(stricter, baseline, declared, order) is weaker


def test_models_compare_by_their_values():
    ip = Baseline().traffic.ip
    assert not is_weaker(None, ip, ip.model_copy())
    assert is_weaker(None, ip, ip.model_copy(update={"deny": ["10.0.0.0/8"]}))


def test_merge_copies_the_baseline_and_keeps_what_validation_must_see():
    base = Baseline().model_dump(mode="json")
    before = Baseline().model_dump(mode="json")
    merged, sources = merge(base, ("api:a", {"traffic": {"ip": {"allow": ["10.0.0.0/8"]}}}),
                            ("route:a/r", {"bogus": {"x": 1}, "identity": "yes"}), ("route:a/r", {"input": 7}))
    assert base == before  # the class baseline is never changed by a route's layers
    assert merged["traffic"]["ip"] == {"allow": ["10.0.0.0/8"], "deny": []}
    assert (merged["bogus"], merged["identity"], merged["input"]) == ({"x": 1}, "yes", 7)  # for validation to refuse
    assert sources == {"traffic.ip.allow": "api:a"}
    partial, _ = merge({}, ("api:a", {"identity": {"required": False}}))
    assert partial["identity"] == {"required": False} and partial["traffic"] == {}


def test_weakenings_carry_both_values_and_the_layer_below_a_nested_control():
    strict = Baseline.model_validate({"traffic": {"max_concurrent": 10}, "identity": {"on_revocation_unavailable": "open"}})
    loose = Baseline.model_validate({"traffic": {"max_concurrent": None, "ip": {"deny": ["10.0.0.0/8"]}},
                                     "identity": {"on_revocation_unavailable": "closed"}})
    found = weakenings(strict, loose, {"traffic.ip.deny": "route:a/r"})
    # the nested `ip` model is compared control by control, and the controls after it still are
    assert [(w.control, w.origin, w.baseline, w.declared) for w in found] == [
        ("traffic.max_concurrent", "class", 10, None)]
    found = weakenings(loose, strict, {"traffic.ip.deny": "route:a/r"})  # fewer denied networks: weaker
    assert [(w.control, w.origin, w.baseline, w.declared) for w in found] == [
        ("identity.on_revocation_unavailable", "class", "closed", "open"),
        ("traffic.ip.deny", "route:a/r", [ipaddress.ip_network("10.0.0.0/8")], [])]


def test_a_whole_model_control_names_the_layer_that_set_one_of_its_fields():
    assert _origin_below("traffic.ip", {"traffic.max": "api:a", "traffic.ip.allow": "route:a/r"}) == "route:a/r"
    assert _origin_below("traffic.ip", {"traffic.ipx": "api:a"}) == "class"


def test_restore_puts_back_baseline_values_in_a_copy():
    declared = {"identity": {"required": False}, "traffic": {"ip": {"allow": ["0.0.0.0/0"], "deny": []}}}
    baseline = {"identity": {"required": True}, "traffic": {"ip": {"allow": ["10.0.0.0/8"], "deny": []}}}
    out = restore(declared, baseline, {"identity.required", "traffic.ip.allow"})
    assert out == {"identity": {"required": True}, "traffic": {"ip": {"allow": ["10.0.0.0/8"], "deny": []}}}
    assert declared["identity"]["required"] is False and declared["traffic"]["ip"]["allow"] == ["0.0.0.0/0"]
    out["traffic"]["ip"]["allow"].append("192.0.2.0/24")
    assert baseline["traffic"]["ip"]["allow"] == ["10.0.0.0/8"]
    limits = {"traffic": {"rate_limits": [{"requests": 10}]}}
    restored = restore({"traffic": {"rate_limits": []}}, limits, {"traffic.rate_limits"})
    restored["traffic"]["rate_limits"][0]["requests"] = 1_000_000
    assert limits["traffic"]["rate_limits"] == [{"requests": 10}]  # a deep copy: the baseline is never shared


def test_every_plain_control_is_annotated_and_no_model_is_compared_whole():
    """What `_compare` relies on (and why its mutants are equivalent): see docs/architecture.md."""
    def walk(model: BaseModel, prefix: str) -> list[str]:
        wrong = []
        for name, info in type(model).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                wrong += [f"{prefix}.{name} (a model with stricter=)"] if "stricter" in extra else walk(value, f"{prefix}.{name}")
            elif "stricter" not in extra:
                wrong.append(f"{prefix}.{name} (no stricter=)")
        return wrong

    baseline = Baseline()
    assert [w for section in SECTIONS for w in walk(getattr(baseline, section), section)] == []
