from __future__ import annotations

import pytest

from bastion.stages.input.schema import Normaliser, compile_schema, pointer


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "string", "nullable": True}, {"type": ["string", "null"]}),
    ({"type": "string", "enum": ["a"], "nullable": True}, {"type": ["string", "null"], "enum": ["a", None]}),
    ({"type": "number", "minimum": 0, "exclusiveMinimum": True}, {"type": "number", "exclusiveMinimum": 0}),
    ({"type": "number", "maximum": 9, "exclusiveMaximum": False}, {"type": "number", "maximum": 9}),
    ({"type": "integer", "format": "int32"}, {"type": "integer", "format": "int32", "minimum": -(2**31),
                                              "maximum": 2**31 - 1}),
    ({"type": "string", "example": "x", "x-internal": True, "xml": {}}, {"type": "string"}),
])
def test_oas30_is_rewritten_to_2020_12(schema: dict, expected: dict) -> None:
    assert Normaliser("3.0", closed=False).root(schema) == expected


def test_31_keeps_numeric_exclusive_bounds() -> None:
    assert Normaliser("3.1", closed=False).root({"exclusiveMinimum": 3}) == {"exclusiveMinimum": 3}


def test_closed_marks_outer_objects_but_not_composition_members() -> None:
    schema = {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}},
                        {"properties": {"b": {"type": "object", "properties": {"c": {}}}}}]}
    out = Normaliser("3.1", closed=True).root(schema)
    assert out["unevaluatedProperties"] is False
    assert "unevaluatedProperties" not in out["allOf"][0]
    assert out["allOf"][1]["properties"]["b"]["unevaluatedProperties"] is False
    validator = compile_schema(out)
    assert validator.is_valid({"a": "x", "b": {"c": 1}})
    assert not validator.is_valid({"a": "x", "z": 1})


def test_explicit_additional_properties_are_respected() -> None:
    out = Normaliser("3.1", closed=True).root({"type": "object", "properties": {"a": {}},
                                                "additionalProperties": {"type": "integer"}})
    assert "unevaluatedProperties" not in out
    assert compile_schema(out).is_valid({"a": 1, "extra": 2})


def test_read_only_properties_are_undeclared_in_requests() -> None:
    schema = {"type": "object", "required": ["id", "name"],
              "properties": {"id": {"type": "integer", "readOnly": True}, "name": {"type": "string"}}}
    out = Normaliser("3.0", closed=True).root(schema)
    assert out["required"] == ["name"] and "id" not in out["properties"]
    validator = compile_schema(out)
    assert validator.is_valid({"name": "x"}) and not validator.is_valid({"name": "x", "id": 1})


def test_byte_format_is_checked() -> None:
    validator = compile_schema({"type": "string", "format": "byte"})
    assert validator.is_valid("aGVsbG8=") and not validator.is_valid("not base64!")


def test_pointer_escapes() -> None:
    assert pointer(["a/b", "c~d", 0]) == "/a~1b/c~0d/0"
    assert pointer([]) == ""
