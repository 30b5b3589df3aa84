from __future__ import annotations

import orjson
import pytest

from bastion.context import Continue, Deny
from bastion.stages.input import InputPolicy, build_body, build_head

from .conftest import request, route_for, run_input

JSON = [("content-type", "application/json")]


# ---------------------------------------------------------------- parameters

PARAMS = [
    # (operation, query, headers, path params, expected reason or None, fragment of the detail)
    ("listProducts", "limit=10&offset=0&sort=-price", [], {}, None, ""),
    ("listProducts", "limit=0", [], {}, "input_invalid_parameter", "query parameter 'limit' must be at least 1"),
    ("listProducts", "limit=101", [], {}, "input_invalid_parameter", "must be at most 100"),
    ("listProducts", "limit=abc", [], {}, "input_invalid_parameter", "'limit' must be an integer"),
    ("listProducts", "limit=1&limit=2", [], {}, "input_invalid_parameter", "must be sent once"),
    ("listProducts", "sort=random", [], {}, "input_invalid_parameter", "not one of the allowed values"),
    ("listProducts", "tag=a&tag=b", [], {}, None, ""),
    ("listProducts", "tag=a&tag=b&tag=c&tag=d&tag=e&tag=f", [], {}, "input_invalid_parameter", "at most 5 items"),
    ("listProducts", "ids=1,2,3", [], {}, None, ""),
    ("listProducts", "ids=1,x", [], {}, "input_invalid_parameter", "'ids' at /1 must be an integer"),
    ("listProducts", "filter[minPrice]=3.5&filter[color]=red", [], {}, None, ""),
    ("listProducts", "filter[minPrice]=cheap", [], {}, "input_invalid_parameter", "'filter' at /minPrice"),
    ("listProducts", "in_stock=true", [], {}, None, ""),
    ("listProducts", "in_stock=yes", [], {}, "input_invalid_parameter", "must be a boolean"),
    ("listProducts", "q=%ff", [], {}, "input_invalid_parameter", "not valid UTF-8"),
    ("listProducts", "role=admin", [], {}, "input_undeclared_field", "'role' is not declared"),
    ("getOrderLine", "", [], {"orderId": "550e8400-e29b-41d4-a716-446655440000", "line": "2"}, None, ""),
    ("getOrderLine", "", [], {"orderId": "not-a-uuid", "line": "2"}, "input_invalid_parameter",
     "path parameter 'orderId' is not a valid uuid"),
    ("getOrderLine", "", [], {"orderId": "550e8400-e29b-41d4-a716-446655440000", "line": "0"},
     "input_invalid_parameter", "'line' must be at least 1"),
    ("getProduct", "", [], {"productId": "99999999999999999999"}, "input_invalid_parameter", "at most"),
    ("deleteProduct", "", [("x-reason", "duplicate")], {"productId": "7"}, None, ""),
    ("deleteProduct", "", [], {"productId": "7"}, "input_invalid_parameter", "header parameter 'x-reason' is required"),
    ("deleteProduct", "", [("x-reason", "because")], {"productId": "7"}, "input_invalid_parameter",
     "not one of the allowed values"),
    ("deleteProduct", "", [("x-reason", "error"), ("x-reason", "error")], {"productId": "7"},
     "input_invalid_parameter", "must be sent once"),
    ("getOrder", "", [("x-request-priority", "9")], {"orderId": "550e8400-e29b-41d4-a716-446655440000"},
     "input_invalid_parameter", "header parameter 'x-request-priority' must be at most 5"),
    ("listOrders", "status=paid&since=2024-01-01T00:00:00Z", [("cookie", "session=0123456789abcdef; x=1")], {},
     None, ""),
    ("listOrders", "", [("cookie", "session=zzz")], {}, "input_invalid_parameter",
     "cookie parameter 'session' does not have the expected format"),
    ("listOrders", "since=yesterday", [], {}, "input_invalid_parameter", "not a valid date-time"),
]


@pytest.mark.parametrize(("op", "query", "headers", "path", "reason", "detail"), PARAMS)
async def test_parameters(shop, shared, op, query, headers, path, reason, detail) -> None:
    decision = await run_input(shop, op, request(query=query, headers=headers, path_params=path), shared,
                               inspection="off")
    if reason is None:
        assert isinstance(decision, Continue), decision
    else:
        assert isinstance(decision, Deny) and decision.status == 400, decision
        assert decision.reason == reason and detail in (decision.detail or ""), decision.detail


async def test_oas31_styles(notes, shared) -> None:
    ok = request("PUT", "coords=lat,1.5,lon,2&labels=a|b", JSON, {"id": "3"}, b'{"text": "hi"}')
    assert isinstance(await run_input(notes, "putNote", ok, shared), Continue)
    bad = request("PUT", "coords=lat,north,lon,2", JSON, {"id": "3"}, b'{"text": "hi"}')
    decision = await run_input(notes, "putNote", bad, shared)
    assert isinstance(decision, Deny) and "'coords' at /lat must be a number" in (decision.detail or "")
    over = request("PUT", "", JSON, {"id": "1001"}, b'{"text": "hi"}')  # operation overrides the path item
    assert isinstance(await run_input(notes, "putNote", over, shared), Deny)


async def test_undeclared_query_strip_drops_it_for_the_upstream(shop, shared) -> None:
    ctx = request(query="limit=5&role=admin&debug=1")
    decision = await run_input(shop, "listProducts", ctx, shared, undeclared="strip")
    assert isinstance(decision, Continue)
    assert ctx.drop_query_params == {"role", "debug"}


async def test_query_credential_consumed_by_identity_is_not_undeclared(shop, shared) -> None:
    ctx = request(query="limit=5&access_token=abc")
    ctx.drop_query_params.add("access_token")
    assert isinstance(await run_input(shop, "listProducts", ctx, shared), Continue)


# ---------------------------------------------------------------- content type and presence of a body

CONTENT = [
    ("createProduct", [], b'{"name":"x","price":{"amount":1,"currency":"EUR"}}', 415),
    ("createProduct", [("content-type", "text/plain")], b"hello", 415),
    ("createProduct", [("content-type", "application/json; charset=utf-8")],
     b'{"name":"x","price":{"amount":1,"currency":"EUR"}}', None),
    ("createProduct", [("content-type", "Application/JSON")], b'{"name":"x","price":{"amount":1,"currency":"EUR"}}',
     None),
    ("updateProduct", JSON, b'{"name":"x"}', 415),  # only application/merge-patch+json
    ("updateProduct", [("content-type", "application/merge-patch+json")], b'{"name":"x"}', None),
    ("createOrder", [("content-type", "application/x-www-form-urlencoded")], b"productId=1&quantity=2", None),
]


@pytest.mark.parametrize(("op", "headers", "body", "status"), CONTENT)
async def test_content_type(shop, shared, op, headers, body, status) -> None:
    decision = await run_input(shop, op, request("POST", headers=headers, path_params={"productId": "1"},
                                                 body=body), shared)
    if status is None:
        assert isinstance(decision, Continue), decision
    else:
        assert isinstance(decision, Deny) and decision.status == status
        assert decision.reason == "input_unsupported_media_type"


async def test_required_body_missing_and_unexpected_body(shop, shared) -> None:
    missing = await run_input(shop, "createProduct", request("POST", headers=JSON), shared)
    assert isinstance(missing, Deny) and missing.reason == "input_invalid_body"
    unexpected = await run_input(shop, "listProducts", request("GET", headers=[("content-length", "4")]), shared)
    assert isinstance(unexpected, Deny) and "takes no request body" in (unexpected.detail or "")


# ---------------------------------------------------------------- JSON bodies

GOOD_PRODUCT = {"name": "Lamp", "price": {"amount": 10, "currency": "EUR"}, "tags": ["home"],
                "description": None, "dimensions": {"width": 1, "height": 2}, "attributes": {"any": "thing"}}

BODIES = [
    ("createProduct", GOOD_PRODUCT, None, ""),
    ("createProduct", {"price": {"amount": 1, "currency": "EUR"}}, "input_invalid_body",
     "at / is missing required property 'name'"),
    ("createProduct", {**GOOD_PRODUCT, "price": {"amount": 1, "currency": "BTC"}}, "input_invalid_body",
     "at /price/currency is not one of the allowed values"),
    ("createProduct", {**GOOD_PRODUCT, "tags": ["x" * 21]}, "input_invalid_body",
     "at /tags/0 must be at most 20 characters long"),
    ("createProduct", {**GOOD_PRODUCT, "role": "admin"}, "input_undeclared_field", "property /role is not declared"),
    ("createProduct", {**GOOD_PRODUCT, "dimensions": {"width": 1, "depth": 3}}, "input_undeclared_field",
     "/dimensions/depth"),
    ("createProduct", {**GOOD_PRODUCT, "price": {"amount": 1, "currency": "EUR", "fx": 1}}, "input_undeclared_field",
     "/price/fx"),
    ("createProduct", {**GOOD_PRODUCT, "name": None}, "input_invalid_body", "at /name must be a string"),
    ("updateProduct", {"price": 0}, "input_invalid_body", "/price must be greater than 0"),  # 3.0 exclusiveMinimum
    ("updateProduct", {"description": None}, None, ""),  # 3.0 nullable
    ("createPayment", {"method": "card", "card": "4111111111111111"}, None, ""),
    ("createPayment", {"method": "bank", "iban": "DE89370400440532013000"}, None, ""),
    ("createPayment", {"method": "card", "card": "4111111111111111", "iban": "x"}, "input_undeclared_field",
     "/iban"),
    ("createPayment", {"method": "cash"}, "input_invalid_body", "does not match exactly one of the allowed shapes"),
    ("createCategory", {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}, None, ""),
    ("createCategory", {"name": "a", "children": [{"children": []}]}, "input_invalid_body",
     "at /children/0 is missing required property 'name'"),
    ("createCategory", {"name": "a", "children": [{"name": "b", "owner": "x"}]}, "input_undeclared_field",
     "/children/0/owner"),
    ("createOrder", {"items": [{"productId": 1, "quantity": 2}], "shipping": {"street": "a", "city": "b",
                                                                            "country": "DE"}}, None, ""),
    ("createOrder", {"items": []}, "input_invalid_body", "at /items must have at least 1 items"),
    ("updateMe", {"email": "not-an-email"}, "input_invalid_body", "/email is not a valid email"),
    ("updateMe", {"address": {"street": "a", "city": "b", "country": "DE", "zip": "$$"}}, "input_invalid_body",
     "/address/zip does not have the expected format"),
]


@pytest.mark.parametrize(("op", "doc", "reason", "detail"), BODIES)
async def test_json_bodies(shop, shared, op, doc, reason, detail) -> None:
    kind = "application/merge-patch+json" if op == "updateProduct" else "application/json"
    ctx = request("POST", headers=[("content-type", kind)], path_params={"productId": "1"}, body=orjson.dumps(doc))
    decision = await run_input(shop, op, ctx, shared, inspection="off")
    if reason is None:
        assert isinstance(decision, Continue), decision
    else:
        assert isinstance(decision, Deny) and decision.status == 400, decision
        assert decision.reason == reason and detail in (decision.detail or ""), decision.detail
        assert "#/" not in (decision.detail or "") and "pattern" not in (decision.detail or "")


async def test_strip_mode_removes_mass_assignment_before_the_upstream(shop, shared) -> None:
    sent = {**GOOD_PRODUCT, "role": "admin", "dimensions": {"width": 1, "isAdmin": True},
            "price": {"amount": 1, "currency": "EUR", "discount": 100}}
    ctx = request("POST", headers=JSON, body=orjson.dumps(sent))
    decision = await run_input(shop, "createProduct", ctx, shared, undeclared="strip")
    assert isinstance(decision, Continue), decision
    forwarded = orjson.loads(ctx.body or b"")
    assert "role" not in forwarded and forwarded["dimensions"] == {"width": 1}
    assert forwarded["price"] == {"amount": 1, "currency": "EUR"}


async def test_strip_mode_leaves_a_clean_body_untouched(shop, shared) -> None:
    raw = orjson.dumps(GOOD_PRODUCT)
    ctx = request("POST", headers=JSON, body=raw)
    assert isinstance(await run_input(shop, "createProduct", ctx, shared, undeclared="strip"), Continue)
    assert ctx.body is raw


async def test_strip_mode_still_rejects_invalid_declared_fields(shop, shared) -> None:
    ctx = request("POST", headers=JSON, body=orjson.dumps({**GOOD_PRODUCT, "role": "admin", "name": ""}))
    decision = await run_input(shop, "createProduct", ctx, shared, undeclared="strip")
    assert isinstance(decision, Deny) and decision.reason == "input_invalid_body"


async def test_allow_mode_lets_undeclared_properties_through(shop, shared) -> None:
    ctx = request("POST", headers=JSON, body=orjson.dumps({**GOOD_PRODUCT, "extra": 1}))
    assert isinstance(await run_input(shop, "createProduct", ctx, shared, undeclared="allow"), Continue)


async def test_explicit_unevaluated_properties_false_in_31(notes, shared) -> None:
    ctx = request("PUT", headers=JSON, path_params={"id": "1"}, body=b'{"text": "a", "archived": null, "x": 1}')
    decision = await run_input(notes, "putNote", ctx, shared, undeclared="allow")
    assert isinstance(decision, Deny) and decision.reason == "input_undeclared_field"
    ctx = request("PUT", headers=JSON, path_params={"id": "1"}, body=b'{"text": "a", "priority": 10}')
    decision = await run_input(notes, "putNote", ctx, shared)
    assert isinstance(decision, Deny) and "must be less than 10" in (decision.detail or "")


# ---------------------------------------------------------------- JSON strictness and limits

LIMITS = [
    (b'{"name": "a", "name": "b"}', "input_invalid_body", "duplicate object key", {}),
    (b'{"a": {"x": 1, "x": 2}}', "input_invalid_body", "duplicate object key", {}),
    (b'[{"k": 1}, {"k": 2}, {"k": 3}]', None, "", {}),  # the same key in different objects is fine
    (b'{"a": "\\"k\\": 1", "b": 2}', None, "", {}),  # a colon inside a string is no key
    (b'{"a": "\xff"}', "input_invalid_body", "not valid UTF-8", {}),
    (b'{"a": "\\ud800"}', "input_invalid_body", "", {}),  # lone surrogate
    (b'{"a": 1', "input_invalid_body", "not valid JSON", {}),
    (b'{"a": NaN}', "input_invalid_body", "not valid JSON", {}),
    (b'[[[[1]]]]', "input_json_limits", "nested deeper than 3", {"max_json_depth": 3}),
    (b'{"a": {"b": {"c": {}}}}', "input_json_limits", "at /a/b/c is nested deeper than 3", {"max_json_depth": 3}),
    (b'{"s": "' + b"x" * 11 + b'"}', "input_json_limits", "at /s is longer than 10", {"max_json_string": 10}),
    (b'{"' + b"k" * 11 + b'": 1}', "input_json_limits", "key longer than 10", {"max_json_string": 10}),
    (b"[1,2,3,4]", "input_json_limits", "more than 3 items", {"max_json_array": 3}),
    (b'{"a":1,"b":2,"c":3,"d":4}', "input_json_limits", "more than 3 members", {"max_json_keys": 3}),
]


@pytest.mark.parametrize(("body", "reason", "detail", "policy"), LIMITS)
async def test_json_strictness_and_limits(shop, shared, body, reason, detail, policy) -> None:
    ctx = request("POST", headers=JSON, body=body)
    decision = await run_input(shop, None, ctx, shared, **policy)  # a route without an operation
    if reason is None:
        assert isinstance(decision, Continue), decision
    else:
        assert isinstance(decision, Deny) and decision.status == 400 and decision.reason == reason, decision
        assert detail in (decision.detail or "")


# ---------------------------------------------------------------- forms

FORM = [("content-type", "application/x-www-form-urlencoded")]


@pytest.mark.parametrize(("body", "reason", "detail"), [
    (b"productId=1&quantity=2&coupon=SAVE10", None, ""),
    (b"productId=1&quantity=20", "input_invalid_body", "at /quantity must be at most 10"),
    (b"productId=one&quantity=2", "input_invalid_body", "at /productId must be an integer"),
    (b"productId=1", "input_invalid_body", "missing required property 'quantity'"),
    (b"productId=1&quantity=2&coupon=save", "input_invalid_body", "/coupon does not have the expected format"),
    (b"productId=1&quantity=2&quantity=3", "input_invalid_body", "'quantity' must be sent once"),
    (b"productId=1&quantity=2&role=admin", "input_undeclared_field", "/role"),
    (b"productId=%ff&quantity=2", "input_invalid_body", "not valid UTF-8"),
])
async def test_urlencoded_forms(shop, shared, body, reason, detail) -> None:
    decision = await run_input(shop, "createOrder", request("POST", headers=FORM, body=body), shared)
    if reason is None:
        assert isinstance(decision, Continue), decision
    else:
        assert isinstance(decision, Deny) and decision.reason == reason and detail in (decision.detail or "")


async def test_urlencoded_strip_rewrites_the_body(shop, shared) -> None:
    ctx = request("POST", headers=FORM, body=b"productId=1&quantity=2&role=admin&isAdmin=1")
    assert isinstance(await run_input(shop, "createOrder", ctx, shared, undeclared="strip"), Continue)
    assert ctx.body == b"productId=1&quantity=2"


async def test_form_field_count_limit(shop, shared) -> None:
    ctx = request("POST", headers=FORM, body=b"&".join(b"f%d=1" % i for i in range(5)))
    decision = await run_input(shop, "createOrder", ctx, shared, max_form_fields=4)
    assert isinstance(decision, Deny) and decision.reason == "input_json_limits"


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "application/octet-stream" if filename else "text/plain"
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


MULTI = [("content-type", "multipart/form-data; boundary=XyZ")]


@pytest.mark.parametrize(("body", "policy", "reason", "detail"), [
    (multipart(("title", None, b"Holiday"), ("file", "a.png", b"\x89PNG...")), {}, None, ""),
    (multipart(("file", "a.png", b"\x89PNG")), {}, "input_invalid_body", "missing required property 'title'"),
    (multipart(("title", None, b"x" * 101)), {}, "input_invalid_body", "/title must be at most 100"),
    (multipart(("title", None, b"t"), ("owner", None, b"me")), {}, "input_undeclared_field", "/owner"),
    (multipart(("title", None, b"t"), ("file", "a", b"x" * 50)), {"max_part_bytes": 10}, "input_json_limits",
     "larger than 10 bytes"),
    (multipart(*[("title", None, b"t")] * 5), {"max_form_fields": 4}, "input_json_limits", "more than 4 parts"),
    # the part's header section is 70 bytes: at the configured limit, then one byte over it
    (multipart(("title", None, b"t")), {"max_part_head_bytes": 70}, None, ""),
    (multipart(("title", None, b"t")), {"max_part_head_bytes": 69}, "input_json_limits",
     "part header is larger than 69 bytes"),
    (multipart(("title", None, b"t"))[:-8], {}, "input_invalid_body", "not terminated"),
    (multipart(("title", None, b"<script>alert(1)</script>")), {}, "input_injection_xss", "form field 'title'"),
])
async def test_multipart_forms(shop, shared, body, policy, reason, detail) -> None:
    decision = await run_input(shop, "upload", request("POST", headers=MULTI, body=body), shared, **policy)
    if reason is None:
        assert isinstance(decision, Continue), decision
    else:
        assert isinstance(decision, Deny) and decision.reason == reason, decision
        assert detail in (decision.detail or "")


# ---------------------------------------------------------------- inspection through the stages

async def test_injection_in_query_is_blocked_with_a_safe_detail(shop, shared) -> None:
    decision = await run_input(shop, "listProducts", request(query="q=%27%20OR%201%3D1--"), shared)
    assert isinstance(decision, Deny) and decision.reason == "input_injection_sqli"
    assert decision.detail == "The query parameter 'q' was refused by content inspection."
    assert "sqli-" in (decision.log_detail or "")


async def test_detect_mode_records_and_continues(shop, shared) -> None:
    ctx = request(query="q=<script>alert(1)</script>")
    decision = await run_input(shop, "listProducts", ctx, shared, inspection="detect")
    assert isinstance(decision, Continue)
    assert [(r.control, r.outcome, r.reason) for r in ctx.records] == [
        ("input.inspection", "detect", "input_injection_xss")]


async def test_exclusions_skip_named_values(shop, shared) -> None:
    ctx = request(query="q=<script>alert(1)</script>")
    assert isinstance(await run_input(shop, "listProducts", ctx, shared, inspection_exclude=["query.q"]), Continue)
    body = orjson.dumps({**GOOD_PRODUCT, "attributes": {"html": "<script>x</script>"}})
    ctx = request("POST", headers=JSON, body=body)
    decision = await run_input(shop, "createProduct", ctx, shared, inspection_exclude=["body./attributes"])
    assert isinstance(decision, Continue)
    ctx = request("POST", headers=JSON, body=body)
    decision = await run_input(shop, "createProduct", ctx, shared)
    assert isinstance(decision, Deny) and "/attributes/html" in (decision.detail or "")


@pytest.mark.parametrize(("headers", "reason"), [
    ([("user-agent", "() { :; }; /bin/bash -c 'cat /etc/passwd'")], "input_injection_cmdi"),
    ([("referer", "http://169.254.169.254/latest/meta-data/")], "input_injection_ssrf"),
    ([("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0")], None),
])
async def test_header_inspection(shop, shared, headers, reason) -> None:
    decision = await run_input(shop, "listProducts", request(headers=headers), shared)
    if reason is None:
        assert isinstance(decision, Continue)
    else:
        assert isinstance(decision, Deny) and decision.reason == reason


async def test_json_keys_and_nested_values_are_inspected(shop, shared) -> None:
    body = orjson.dumps({"note": "fine", "items": [{"productId": 1, "quantity": 1}],
                         "shipping": {"street": "../../../etc/passwd", "city": "x", "country": "DE"}})
    decision = await run_input(shop, "createOrder", request("POST", headers=JSON, body=body), shared)
    assert isinstance(decision, Deny) and decision.reason == "input_injection_traversal"
    assert "/shipping/street" in (decision.detail or "")


async def test_benign_lookalikes_pass_the_whole_stage(shop, shared) -> None:
    body = orjson.dumps({**GOOD_PRODUCT, "name": "O'Brien's lamp",
                         "description": "Select the size; see [docs](../guide.md) or https://example.com/x"})
    decision = await run_input(shop, "createProduct", request("POST", headers=JSON, body=body), shared)
    assert isinstance(decision, Continue), decision


# ---------------------------------------------------------------- building

def test_build_skips_what_does_not_apply(shop) -> None:
    off = InputPolicy(contract="off", inspection="off")
    assert build_head(off, route_for(shop, "listProducts"), None) is None
    assert build_body(InputPolicy(), route_for(shop, "listProducts"), None) is None  # GET, no requestBody
    body = build_body(InputPolicy(), route_for(shop, "createProduct"), None)
    assert body is not None and body.needs_body
    assert build_head(InputPolicy(), route_for(shop, None), None) is not None  # inspection still applies


def test_policy_ids_name_the_control(shop) -> None:
    stage = build_head(InputPolicy(), route_for(shop, "listProducts"), None)
    assert stage is not None and stage.pid_inspection == "class:public/shop/listProducts/input.inspection"


async def test_strip_removes_only_the_undeclared_property_inside_an_allof_branch():
    """An undeclared property nested in an `allOf` branch fails the branch; its declared siblings must survive."""
    import pathlib

    from bastion.context import RequestContext
    from bastion.openapi.loader import load_openapi
    from bastion.stages.base import RouteInfo
    from bastion.stages.input import prepare

    doc = load_openapi(pathlib.Path(__file__).parent.parent / "response" / "users.yaml")
    op = doc.operation("putUser")
    info = RouteInfo(api="users", route="putUser", klass="c", path="/users/{id}", methods=frozenset({"PUT"}),
                     path_params=("id",), operation=op.operation)
    stage = build_body(InputPolicy(undeclared="strip", inspection="off"), info, prepare(None, None))
    sent = {"name": "ann", "email": "a@b.c", "address": {"city": "Oslo", "role": "admin"}}
    ctx = RequestContext(method="PUT", raw_target="/users/1", path="/users/1", query="", headers=JSON,
                         client_ip="1.2.3.4", request_id="r", start=0.0)
    ctx.path_params = {"id": "1"}
    ctx.body = orjson.dumps(sent)
    decision = await stage.check(ctx)
    assert isinstance(decision, Continue), decision
    assert orjson.loads(ctx.body) == {"name": "ann", "email": "a@b.c", "address": {"city": "Oslo"}}
