"""gRPC statuses for denials, grpc-timeout, message framing limits and method routes (tables)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bastion.context import Deny
from bastion.grpc.framing import MessageCounter, MessageLimitError
from bastion.grpc.routes import GrpcRoutes, methods_from_descriptor_set, parse_method
from bastion.grpc.status import format_timeout, grpc_message, grpc_status, parse_timeout


@pytest.mark.parametrize("status, code", [
    (400, 3), (401, 16), (403, 7), (404, 12), (405, 12), (408, 4), (413, 8), (429, 8), (431, 8), (500, 13),
    (502, 14), (503, 14), (504, 4), (418, 7), (599, 14),
])
def test_deny_status_to_grpc_code(status, code):
    assert grpc_status(Deny(status, "r", "p")) == code


@pytest.mark.parametrize("value, seconds", [
    ("1S", 1.0), ("100m", 0.1), ("2M", 120.0), ("1H", 3600.0), ("500u", 0.0005), ("7n", 7e-9),
    ("99999999S", 99999999.0), (None, None),
])
def test_parse_timeout(value, seconds):
    assert parse_timeout(value) == pytest.approx(seconds) if seconds else parse_timeout(value) is None


@pytest.mark.parametrize("value", ["", "1", "S", "1s", "123456789S", "-1S", "1.5S", "1 S"])
def test_malformed_timeout(value):
    with pytest.raises(ValueError):
        parse_timeout(value)


@pytest.mark.parametrize("seconds", [0.0000001, 0.25, 1.5, 90.0, 7200.0, 1e9])
def test_format_timeout_round_trips_within_a_unit(seconds):
    text = format_timeout(seconds)
    assert len(text) <= 9
    assert parse_timeout(text) <= seconds + 1e-9


def test_grpc_message_is_percent_encoded():
    assert grpc_message("100% sure: é\n") == "100%25 sure: %C3%A9%0A"


def frame(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize("split", [1, 2, 3, 5, 7, 1000])
def test_counter_follows_messages_across_any_split(split):
    data = frame(b"a" * 10) + frame(b"") + frame(b"b" * 300)
    counter = MessageCounter(max_bytes=300)
    for i in range(0, len(data), split):
        counter.feed(data[i:i + split])
    assert counter.messages == 3 and counter.complete


def test_counter_limits():
    with pytest.raises(MessageLimitError) as info:
        MessageCounter(max_bytes=10).feed(frame(b"x" * 11)[:5])  # refused from the prefix, before the payload
    assert info.value.reason == "grpc_message_too_large"
    counter = MessageCounter(max_bytes=10, max_messages=2)
    counter.feed(frame(b"1") + frame(b"2"))
    with pytest.raises(MessageLimitError) as info:
        counter.feed(frame(b"3"))
    assert info.value.reason == "grpc_too_many_messages"
    partial = MessageCounter(max_bytes=10)
    partial.feed(frame(b"abc")[:6])
    assert not partial.complete


@pytest.mark.parametrize("path, ok", [
    ("/pkg.Svc/Method", True), ("pkg.v1.Svc/M", True), ("/Svc", False), ("/a/b/c", False), ("/a b/c", False),
    ("//m", False),
])
def test_parse_method(path, ok):
    if ok:
        assert parse_method(path).path == "/" + path.strip("/")
    else:
        with pytest.raises(ValueError):
            parse_method(path)


def test_methods_from_a_descriptor_set_built_by_protoc(tmp_path):
    (tmp_path / "shop.proto").write_text("""
        syntax = "proto3";
        package shop.v1;
        message Req { string order_id = 1; }
        message Res { string status = 1; }
        service Orders {
          rpc Get(Req) returns (Res);
          rpc Watch(Req) returns (stream Res);
          rpc Upload(stream Req) returns (Res);
          rpc Chat(stream Req) returns (stream Res);
        }
    """)
    out = tmp_path / "shop.pb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", f"--descriptor_set_out={out}",
                    "shop.proto"], check=True)
    methods = methods_from_descriptor_set(out)
    assert [(m.path, m.kind, m.input_type) for m in methods] == [
        ("/shop.v1.Orders/Get", "unary", "shop.v1.Req"),
        ("/shop.v1.Orders/Watch", "server_streaming", "shop.v1.Req"),
        ("/shop.v1.Orders/Upload", "client_streaming", "shop.v1.Req"),
        ("/shop.v1.Orders/Chat", "bidi_streaming", "shop.v1.Req"),
    ]
    routes = GrpcRoutes(methods)
    assert routes.match("/shop.v1.Orders/Get") is methods[0]
    assert routes.match("/shop.v1.Orders/Delete") is None
    assert methods[0].route() == {"name": "shop.v1.Orders.Get", "path": "/shop.v1.Orders/Get", "methods": ["POST"]}
