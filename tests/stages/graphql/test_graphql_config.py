"""GraphqlPolicy (bastion/stages/graphql/config.py): validation and what counts as weaker than the class."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from bastion.governance.baseline import is_weaker
from bastion.stages.graphql import GraphqlPolicy

SHA = "a" * 64


def weaker(field: str, baseline: Any, declared: Any) -> bool:
    """Compare two values of one control the way `validate` does, after the model has normalised them."""
    info = GraphqlPolicy.model_fields[field]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    before = getattr(GraphqlPolicy(**{field: baseline}), field)
    after = getattr(GraphqlPolicy(**{field: declared}), field)
    return is_weaker(extra.get("stricter"), before, after, extra.get("order"))  # type: ignore[arg-type]


def test_every_field_is_a_control() -> None:
    for name, info in GraphqlPolicy.model_fields.items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict) and extra.get("stricter"), name
        assert info.description, name


STRICTNESS = [
    ("enabled", "auto", False, True),
    ("enabled", "auto", True, False),
    ("enabled", True, "auto", True),
    ("enabled", False, "auto", False),
    ("max_depth", 10, 12, True),
    ("max_depth", 10, 8, False),
    ("max_cost", 1000, 5000, True),
    ("max_aliases", 5, 10, True),
    ("max_batch", 1, 5, True),
    ("max_directives", 5, 3, False),
    ("max_tokens", 1000, 2000, True),
    ("max_query_length", 1000, 500, False),
    ("default_list_size", 100, 10, True),
    ("list_arguments", ["first", "last"], ["first"], True),
    ("list_arguments", ["first"], ["first", "pageSize"], False),
    ("introspection", False, True, True),
    ("introspection", True, False, False),
    ("persisted_only", True, False, True),
    ("persisted_only", False, True, False),
    ("persisted_queries", [], [SHA], False),  # the API's own list; persisted_only is the control
    ("operation_scopes", {"createOrder": ["orders:write"]}, {}, True),
    ("operation_scopes", {"createOrder": ["orders:write", "audit"]}, {"createOrder": ["orders:write"]}, True),
    ("operation_scopes", {"createOrder": ["orders:write"]}, {"createOrder": ["orders:admin"]}, True),
    ("operation_scopes", {"createOrder": ["orders:write"]}, {"createOrder": ["orders:write", "x"], "b": ["y"]},
     False),
]


@pytest.mark.parametrize(("field", "baseline", "declared", "is_weak"), STRICTNESS)
def test_strictness(field, baseline, declared, is_weak) -> None:
    assert weaker(field, baseline, declared) is is_weak


def test_operation_scopes_are_stored_as_pairs_and_read_back() -> None:
    policy = GraphqlPolicy(operation_scopes={"refund": ["payments:refund", "orders:write"], "a": ["x"]})
    assert policy.operation_scopes == (("a", "x"), ("refund", "orders:write"), ("refund", "payments:refund"))
    assert policy.scopes_by_name() == {"a": frozenset({"x"}), "refund": frozenset({"orders:write", "payments:refund"})}
    dumped = policy.model_dump(mode="json")
    assert dumped["operation_scopes"] == {"a": ["x"], "refund": ["orders:write", "payments:refund"]}
    assert GraphqlPolicy.model_validate(dumped) == policy  # a dumped policy (explain, /policies) reads back
    # the baseline merge overlays layers on the dumped class, key by key
    layered = {**policy.model_dump()["operation_scopes"], "refund": ["orders:write"]}
    assert weaker("operation_scopes", policy.model_dump()["operation_scopes"], layered)


INVALID = [
    {"persisted_queries": ["abc"]},
    {"persisted_queries": ["g" * 64]},
    {"operation_scopes": {"createOrder": "orders:write"}},
    {"operation_scopes": {"create-order": ["orders:write"]}},
    {"operation_scopes": {"createOrder": ['bad"scope']}},
    {"list_arguments": ["page size"]},
    {"max_depth": 0},
    {"max_depth": 201},
    {"max_batch": 0},
    {"enabled": "sometimes"},
    {"max_complexity": 5},  # unknown fields are errors: a typo must not disable a control
]


@pytest.mark.parametrize("data", INVALID)
def test_invalid(data) -> None:
    with pytest.raises(ValidationError):
        GraphqlPolicy(**data)


def test_hashes_are_normalised_to_lower_case() -> None:
    assert GraphqlPolicy(persisted_queries=["A" * 64]).persisted_queries == ["a" * 64]


def test_every_example_in_the_docs_validates() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "graphql.md").read_text()
    sections: list[dict[str, Any]] = []

    def find(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                sections.append(value) if key == "graphql" else find(value)
        elif isinstance(node, list):
            for item in node:
                find(item)

    for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL):
        find(YAML(typ="safe").load(block))
    assert len(sections) >= 4
    for section in sections:
        GraphqlPolicy(**section)
