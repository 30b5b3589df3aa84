"""API-aware scoping: the OpenAPI contract decides which CRS families a field needs."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bastion.context import Deny
from bastion.openapi import load_openapi
from bastion.stages.input.crs.scope import Scope, build_scope, classify, form_kinds, parameter_kinds, with_query
from tests.stages.input.conftest import request, run_input
from tests.stages.input.crs.conftest import requires_crs
from tests.stages.input.test_stage import multipart

SCHEMA = {
    "type": "object",
    "allOf": [{"properties": {"id": {"type": "integer"}}}],
    "properties": {
        "name": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "nick": {"type": "string", "pattern": "^[a-z' =]+$"},
        "role": {"type": "string", "enum": ["admin", "user"]},
        "bio": {"type": "string", "x-bastion-content": "html"},
        "snippets": {"type": "array", "items": {"type": "string", "x-bastion-content": "code"}},
        "owner": {"$ref": "#/components/schemas/User"},
        "any": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
    },
}
REFS = {"#/components/schemas/User": {"type": "object", "properties": {"age": {"type": "integer"}}}}


def test_classify_names_fields_as_modsecurity_does() -> None:
    doc = {"id": 1, "name": "x", "email": "a@b.example", "nick": "o'neil", "role": "admin", "bio": "<b>",
           "snippets": ["ls -la", "SELECT 1"], "owner": {"age": 4}, "any": "1", "extra": "y"}
    assert classify(doc, build_scope(SCHEMA, REFS)) == {
        "json.id": "typed", "json.email": "typed", "json.nick": "typed", "json.role": "typed",
        "json.bio": "html", "json.snippets.array_0": "code", "json.snippets.array_1": "code",
        "json.owner.age": "typed"}  # name, any (oneOf) and extra stay free text


@pytest.mark.parametrize(("schema", "kind"), [
    ({"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"}, "typed"),
    ({"type": "string", "pattern": "^[-+0-9 ().x]{4,32}$"}, "typed"),  # `.` inside a class is a dot
    ({"type": "string", "pattern": "^v\\.[0-9]+$"}, "typed"),
    ({"type": "string", "pattern": "^.*$"}, "text"),           # constrains nothing
    ({"type": "string", "pattern": "^[^<>]+$"}, "text"),       # a negated class: a blocklist, not a contract
    ({"type": "string", "pattern": "[a-z]+"}, "text"),         # unanchored
    ({"type": "string", "pattern": "^\\S+$"}, "text"),
    ({"type": "string", "format": "uri"}, "text"),             # a URI's query is free text
    ({"type": "string", "format": "uuid"}, "typed"),
    ({"type": ["integer", "null"]}, "typed"),
])
def test_what_counts_as_constrained(schema: dict[str, object], kind: str) -> None:
    assert build_scope(schema).kind == kind


def test_unknown_schemas_are_free_text() -> None:
    assert build_scope(None) == Scope() and build_scope({"$ref": "#/missing"}, {}) == Scope()
    assert parameter_kinds([{"in": "query", "name": "page", "schema": {"type": "integer"}},
                            {"in": "query", "name": "q", "schema": {"type": "string"}},
                            {"in": "header", "name": "x", "schema": {"type": "integer"}}], None) == {"page": "typed"}


SPEC = """
openapi: 3.0.3
info: {title: notes, version: "1"}
paths:
  /notes:
    post:
      operationId: createNote
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                title: {type: string}
                nick: {type: string, pattern: "^[a-z' =]+$"}
                body: {type: string, x-bastion-content: html}
                code: {type: string, x-bastion-content: code}
      responses: {"201": {description: created}}
"""


@requires_crs
async def test_contract_scopes_the_crs(tmp_path: Path, shared) -> None:
    spec = tmp_path / "notes.yaml"
    spec.write_text(SPEC)
    doc = load_openapi(spec)

    async def send(body: dict[str, str], **crs: object) -> object:
        ctx = request("POST", headers=[("content-type", "application/json"), ("host", "api.example")],
                      body=orjson.dumps(body))
        return await run_input(doc, "createNote", ctx, shared, inspection_categories=[],
                               crs={"enabled": True, **crs})

    shell = "for f in $(ls); do cat /etc/passwd; done"
    assert not isinstance(await send({"code": shell}), Deny)               # code: no RCE/SQL rules
    assert isinstance(await send({"title": shell}), Deny)                  # free text: every rule
    assert isinstance(await send({"code": shell}, api_aware=False), Deny)  # as ModSecurity would
    assert not isinstance(await send({"nick": "a' or 'a'='a"}), Deny)       # the pattern already constrains it
    assert isinstance(await send({"body": "<img src=x onerror=alert(1)>"}), Deny)  # html keeps XSS
    assert not isinstance(await send({"body": "SELECT * FROM users WHERE 1=1; -- a hint"}), Deny)


def test_form_fields_are_scoped_by_name() -> None:
    scope = build_scope(SCHEMA, REFS)
    names = ["id", "name", "email", "role", "bio", "snippets", "owner", "extra"]
    assert form_kinds(names, scope) == {"id": "typed", "email": "typed", "role": "typed", "bio": "html",
                                        "snippets": "code"}  # an array field takes its items' kind


def test_query_kinds_join_the_body_unless_a_body_field_shares_the_name() -> None:
    assert with_query({"json.a": "typed"}, {"page": "typed", "id": "typed"}, ["id"]) == {
        "json.a": "typed", "page": "typed"}


FORM_SPEC = """
openapi: 3.0.3
info: {title: forms, version: "1"}
paths:
  /notes:
    post:
      operationId: postForm
      requestBody:
        required: true
        content:
          application/x-www-form-urlencoded:
            schema: {$ref: "#/components/schemas/Note"}
          multipart/form-data:
            schema: {$ref: "#/components/schemas/Note"}
      responses: {"201": {description: created}}
components:
  schemas:
    Note:
      type: object
      properties:
        title: {type: string}
        qty: {type: integer}
        nick: {type: string, pattern: "^[a-z' =]+$"}
        code: {type: string, x-bastion-content: code}
        body: {type: string, x-bastion-content: html}
        attachment: {type: string, format: binary}
"""
SHELL = "for f in $(ls); do cat /etc/passwd; done"


@requires_crs
@pytest.mark.parametrize(("fields", "api_aware", "refused"), [
    ({"code": SHELL}, True, False),                               # code: no RCE/SQL rules
    ({"title": SHELL}, True, True),                               # free text: every rule
    ({"code": SHELL}, False, True),                               # as ModSecurity would
    ({"nick": "a' or 'a'='a", "qty": "3"}, True, False),          # the pattern already constrains it
    ({"body": "<img src=x onerror=alert(1)>"}, True, True),       # html keeps XSS
    ({"body": "SELECT * FROM users WHERE 1=1; -- a hint"}, True, False),
])
async def test_contract_scopes_the_crs_for_form_bodies(tmp_path: Path, shared, fields: dict[str, str],
                                                       api_aware: bool, refused: bool) -> None:
    spec = tmp_path / "forms.yaml"
    spec.write_text(FORM_SPEC)
    doc = load_openapi(spec)
    from urllib.parse import urlencode
    bodies = {"application/x-www-form-urlencoded": urlencode(fields).encode(),
              "multipart/form-data; boundary=XyZ": multipart(*((k, None, v.encode()) for k, v in fields.items()))}
    for kind, body in bodies.items():
        ctx = request("POST", headers=[("content-type", kind), ("host", "api.example")], body=body)
        outcome = await run_input(doc, "postForm", ctx, shared, inspection_categories=[],
                                  crs={"enabled": True, "api_aware": api_aware})
        assert isinstance(outcome, Deny) is refused, (kind, fields)


@requires_crs
async def test_a_multipart_name_also_sent_as_a_file_is_not_scoped(tmp_path: Path, shared) -> None:
    spec = tmp_path / "forms.yaml"
    spec.write_text(FORM_SPEC)
    doc = load_openapi(spec)
    # the file part's bytes were never validated: the name's text part must not switch the rules off for it
    body = multipart(("code", None, b"ls"), ("attachment", "a.txt", b"x"))
    body = body.replace(b'name="attachment"; filename="a.txt"\r\nContent-Type: application/octet-stream',
                        b'name="code"\r\nContent-Type: application/octet-stream').replace(b"\r\n\r\nx\r\n",
                                                                                          b"\r\n\r\n" + SHELL.encode() + b"\r\n")
    ctx = request("POST", headers=[("content-type", "multipart/form-data; boundary=XyZ"), ("host", "api.example")],
                  body=body)
    outcome = await run_input(doc, "postForm", ctx, shared, inspection_categories=[], crs={"enabled": True})
    assert isinstance(outcome, Deny)


XML_SPEC = """
openapi: 3.0.3
info: {title: soap, version: "1"}
paths:
  /orders:
    post:
      operationId: postXml
      requestBody:
        required: true
        content:
          application/xml:
            schema: {type: object}
      responses: {"200": {description: ok}}
"""


@requires_crs
async def test_declared_xml_is_inspected_as_xml_text(tmp_path: Path, shared) -> None:
    spec = tmp_path / "soap.yaml"
    spec.write_text(XML_SPEC)
    doc = load_openapi(spec)

    async def send(body: bytes) -> object:
        ctx = request("POST", headers=[("content-type", "application/xml"), ("host", "api.example")], body=body)
        return await run_input(doc, "postXml", ctx, shared, inspection_categories=[], crs={"enabled": True})

    assert not isinstance(await send(b"<order><note>Leave it at the door</note></order>"), Deny)
    deny = await send(b"<order><note>1' UNION SELECT password FROM users--</note></order>")
    assert isinstance(deny, Deny) and deny.reason == "input_injection_crs" and "XML:/*" in (deny.log_detail or "")
    deny = await send(b'<!DOCTYPE a [<!ENTITY x "y">]><order>&x;</order>')  # no DTDs: refused, not expanded
    assert isinstance(deny, Deny) and deny.status == 415
