from pathlib import Path

import pytest

from bastion.config.loader import ConfigError
from bastion.openapi import load_openapi
from bastion.openapi.keys import REFS_KEY, VERSION_KEY

DATA = Path(__file__).parent.parent / "data" / "openapi"


def test_operations_in_document_order_with_ids_and_path_params() -> None:
    doc = load_openapi(DATA / "shop.yaml")
    assert doc.version == "3.0"
    assert len(doc.operations) >= 10
    first = doc.operations[0]
    assert (first.method, first.path, first.operation_id) == ("GET", "/products", "listProducts")
    line = doc.operation("getOrderLine")
    assert line is not None and line.path_params == ("orderId", "line")
    assert doc.operation("nope") is None
    assert {p.resolve() for p in doc.files} == {(DATA / "shop.yaml").resolve(), (DATA / "common.yaml").resolve()}


def test_path_item_parameters_are_merged_and_refs_resolved() -> None:
    doc = load_openapi(DATA / "shop.yaml")
    op = doc.operation("deleteProduct")
    assert op is not None
    names = [(p["name"], p["in"]) for p in op.operation["parameters"]]
    assert names == [("productId", "path"), ("X-Reason", "header")]
    assert op.operation["parameters"][0]["schema"]["format"] == "int64"
    assert op.operation[VERSION_KEY] == "3.0"


def test_operation_parameter_overrides_path_item_parameter() -> None:
    doc = load_openapi(DATA / "notes31.yaml")
    op = doc.operation("putNote")
    assert op is not None and doc.version == "3.1"
    ids = [p for p in op.operation["parameters"] if p["name"] == "id"]
    assert len(ids) == 1 and ids[0]["schema"]["maximum"] == 1000


def test_security_inherited_unless_the_operation_sets_it() -> None:
    doc = load_openapi(DATA / "shop.yaml")
    assert doc.operation("listProducts").operation["security"] == []  # type: ignore[union-attr]
    assert doc.operation("createProduct").operation["security"] == [{"bearer": []}]  # type: ignore[union-attr]


def test_refs_to_other_files_and_nested_refs_are_inlined() -> None:
    doc = load_openapi(DATA / "shop.yaml")
    op = doc.operation("createOrder").operation  # type: ignore[union-attr]
    shipping = op["requestBody"]["content"]["application/json"]["schema"]["properties"]["shipping"]
    assert shipping["required"] == ["street", "city", "country"]
    error = doc.operation("getProduct").operation["responses"]["default"]  # type: ignore[union-attr]
    assert error["content"]["application/problem+json"]["schema"]["properties"]["status"] == {"type": "integer"}
    created = doc.operation("createProduct").operation["responses"]["201"]  # type: ignore[union-attr]
    product = created["content"]["application/json"]["schema"]
    assert product["allOf"][0]["properties"]["price"]["required"] == ["amount", "currency"]


def test_recursive_schema_keeps_a_ref_and_attaches_its_definition() -> None:
    doc = load_openapi(DATA / "shop.yaml")
    op = doc.operation("createCategory").operation  # type: ignore[union-attr]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["children"]["items"] == {"$ref": "#/components/schemas/Category"}
    assert op[REFS_KEY]["#/components/schemas/Category"]["required"] == ["name"]
    assert REFS_KEY not in doc.operation("createOrder").operation  # type: ignore[union-attr]


def _write(tmp_path: Path, text: str, name: str = "api.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "line", "message"), [
    ("openapi: 3.0.0\npaths:\n  /a:\n    get: {responses: {}\n", 5, "YAML"),
    ("openapi: 2.0\npaths: {}\n", 1, "OpenAPI 3.0 or 3.1 expected"),
    ("openapi: 3.0.0\npaths:\n  /a:\n    get:\n      requestBody: {$ref: '#/components/x'}\n", 5, "points at nothing"),
    ("openapi: 3.0.0\npaths:\n  /a:\n    get:\n      requestBody: {$ref: 'http://evil/x.yaml'}\n", 5, "remote $ref"),
    ("openapi: 3.0.0\npaths:\n  /a:\n    get:\n      requestBody: {$ref: 'missing.yaml#/x'}\n", 5, "no file"),
    ("openapi: 3.0.0\npaths:\n  /a/{id}:\n    get: {responses: {}}\n", 4, "not declared"),
    ("openapi: 3.0.0\npaths:\n  /a:\n    get: {}\n    get: {}\n", 5, "YAML"),
])
def test_errors_point_at_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_openapi(path)
    diag = info.value.diagnostics[0]
    assert diag.file == str(path) and diag.line == line, str(info.value)
    assert message in diag.message


def test_property_named_default_is_still_resolved(tmp_path: Path) -> None:
    path = _write(tmp_path, """
openapi: 3.1.0
paths:
  /a:
    post:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                default: {$ref: '#/components/schemas/S'}
                other: {type: string, default: {$ref: not-a-ref}}
components:
  schemas:
    S: {type: integer}
""")
    op = load_openapi(path).operations[0].operation
    props = op["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert props["default"] == {"type": "integer"}
    assert props["other"]["default"] == {"$ref": "not-a-ref"}
