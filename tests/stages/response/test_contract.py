"""The response contract: schema lookup by status and media type, stripping through $ref/allOf, blocking."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bastion.openapi import OpenApiDocument
from bastion.stages.response.contract import ResponseContract, for_responses


def contract(doc: OpenApiDocument, operation_id: str) -> ResponseContract:
    op = doc.operation(operation_id)
    assert op is not None
    return ResponseContract(op.operation)


@pytest.mark.parametrize(("operation_id", "status", "content_type", "found"), [
    ("getUser", 200, "application/json", True),
    ("getUser", 200, "application/json; charset=utf-8", True),
    ("getUser", 200, "text/html", False),  # not JSON: never buffered
    ("getUser", 200, None, False),
    ("getUser", 404, "application/json", False),  # 404 declares only text/plain
    ("getUser", 409, "application/problem+json", True),  # 4XX range
    ("getUser", 409, "application/json", False),  # 4XX declares only problem+json
    ("getUser", 500, "application/json", False),  # default without content
    ("listUsers", 206, "application/json", True),  # 2XX range
    ("putUser", 204, "application/json", False),
])
def test_which_schema_applies(users: OpenApiDocument, operation_id: str, status: int, content_type: str | None,
                              found: bool) -> None:
    assert (contract(users, operation_id).validator(status, content_type) is not None) is found


def test_an_operation_without_json_responses_is_falsy(users: OpenApiDocument) -> None:
    assert not contract(users, "putUser")
    assert contract(users, "getUser")


USER = {"name": "ann", "id": 7, "email": None, "address": {"city": "Oslo"}}

STRIP_CASES: list[tuple[str, str, Any, str, Any]] = [
    ("conforming", "getUser", USER, "", None),
    ("top level through allOf and $ref", "getUser", {**USER, "is_admin": True}, "response_stripped", USER),
    ("nested object", "getUser", {**USER, "address": {"city": "Oslo", "db_host": "10.0.0.5"}},
     "response_stripped", USER),
    ("writeOnly never leaves", "getUser", {**USER, "password": "hunter2"}, "response_stripped", USER),
    ("several levels at once", "getUser", {**USER, "x": 1, "address": {"city": "Oslo", "y": {"z": 1}}},
     "response_stripped", USER),
    ("in array items", "listUsers", {"items": [USER, {**USER, "ssn": "1"}], "next": None}, "response_stripped",
     {"items": [USER, USER], "next": None}),
    ("recursive $ref", "getTree", {"label": "a", "children": [{"label": "b", "secret": 1, "children": []}]},
     "response_stripped", {"label": "a", "children": [{"label": "b", "children": []}]}),
    ("type mismatch alone: forwarded as is, counted", "getTree", {"label": 5}, "response_schema_mismatch", None),
    ("type mismatch beside an undeclared property, no composition: stripped and counted", "getTree",
     {"label": 5, "x": 1, "children": [{"label": "b", "secret": 1}]}, "response_schema_mismatch",
     {"label": 5, "children": [{"label": "b"}]}),
    ("type mismatch inside allOf: the branch failed, every property looks undeclared", "getUser",
     {**USER, "id": "seven"}, "response_unfilterable", None),
    ("allOf mismatch in one item, undeclared in another: cannot tell for the failing item", "listUsers",
     {"items": [{**USER, "id": "seven"}, {**USER, "ssn": "1"}]}, "response_unfilterable", None),
    ("none of oneOf's shapes: cannot tell what is declared", "getPet", {"purrs": True}, "response_unfilterable",
     None),
    ("one of oneOf's shapes: undeclared stripped", "getPet", {"meows": True, "chip_id": "x"}, "response_stripped",
     {"meows": True}),
    ("invalid JSON", "getUser", b"{\"name\": ", "response_unfilterable", None),
    ("duplicate keys", "getUser", b"{\"name\": \"a\", \"name\": \"b\"}", "response_unfilterable", None),
]


@pytest.mark.parametrize(("case", "operation_id", "doc", "reason", "expected"), STRIP_CASES,
                         ids=[c[0] for c in STRIP_CASES])
def test_strip(users: OpenApiDocument, case: str, operation_id: str, doc: Any, reason: str, expected: Any) -> None:
    c = contract(users, operation_id)
    validator = c.validator(200, "application/json")
    assert validator is not None
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    outcome = ResponseContract.filter(body, validator, strip=True)
    assert outcome.reason == reason
    if expected is not None:
        assert outcome.body is not None
        assert orjson.loads(outcome.body) == expected
    if expected is None:
        assert outcome.body is None  # forwarded byte for byte, or refused


@pytest.mark.parametrize(("doc", "reason", "where"), [
    (USER, "", ""),
    ({**USER, "is_admin": True}, "response_undeclared", "/is_admin"),
    ({**USER, "address": {"city": "Oslo", "db_host": "10.0.0.5"}}, "response_undeclared", "/address/db_host"),
    ({**USER, "password": "x"}, "response_undeclared", "/password"),
    ({**USER, "id": "seven"}, "response_schema_mismatch", "/id"),
])
def test_block(users: OpenApiDocument, doc: Any, reason: str, where: str) -> None:
    validator = contract(users, "getUser").validator(200, "application/json")
    assert validator is not None
    outcome = ResponseContract.filter(orjson.dumps(doc), validator, strip=False)
    assert (outcome.reason, outcome.where) == (reason, where)
    assert outcome.body is None


def test_oas31_operation_dict() -> None:
    op = {"x-bastion-oas": "3.1", "responses": {"200": {"content": {"application/json": {"schema": {
        "type": "object", "properties": {"a": {"type": ["string", "null"]}}}}}}}}
    validator = ResponseContract(op).validator(200, "application/json")
    assert validator is not None
    outcome = ResponseContract.filter(b'{"a": null, "b": 2}', validator, strip=True)
    assert orjson.loads(outcome.body or b"") == {"a": None}


def test_for_responses_swaps_flags_but_not_data() -> None:
    schema = {"properties": {"a": {"readOnly": True}, "b": {"writeOnly": True}},
              "example": {"readOnly": True}, "enum": [{"writeOnly": True}]}
    assert for_responses(schema) == {"properties": {"a": {}, "b": {"readOnly": True}},
                                     "example": {"readOnly": True}, "enum": [{"writeOnly": True}]}
