"""The WebSocket opening handshake, both ways (RFC 6455 §4), as a table."""

from __future__ import annotations

import pytest

from bastion.context import Deny
from bastion.http.websocket import (
    WebSocketConfig,
    accept_value,
    check_answer,
    check_handshake,
    wants_websocket,
    websocket_config,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example
GOOD = [("host", "gw"), ("connection", "keep-alive, Upgrade"), ("upgrade", "websocket"),
        ("sec-websocket-version", "13"), ("sec-websocket-key", KEY)]


def test_accept_value_is_the_rfcs_example() -> None:
    assert accept_value(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def without(name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in GOOD if n != name]


def replaced(name: str, value: str) -> list[tuple[str, str]]:
    return [*without(name), (name, value)]


@pytest.mark.parametrize(("method", "version", "headers", "status", "reason"), [
    ("GET", "1.1", GOOD, 0, ""),
    ("POST", "1.1", GOOD, 400, "websocket_bad_handshake"),
    ("GET", "1.0", GOOD, 400, "websocket_bad_handshake"),
    ("GET", "1.1", without("connection"), 400, "websocket_bad_handshake"),
    ("GET", "1.1", replaced("sec-websocket-version", "8"), 426, "websocket_bad_version"),
    ("GET", "1.1", without("sec-websocket-key"), 400, "websocket_bad_handshake"),
    ("GET", "1.1", replaced("sec-websocket-key", "c2hvcnQ="), 400, "websocket_bad_handshake"),
    ("GET", "1.1", replaced("sec-websocket-key", "not base64!!"), 400, "websocket_bad_handshake"),
])
def test_client_handshake(method: str, version: str, headers: list[tuple[str, str]], status: int,
                          reason: str) -> None:
    result = check_handshake(method, version, headers, "api:x/ws")
    if status == 0:
        assert not isinstance(result, Deny) and result.accept == accept_value(KEY)
    else:
        assert isinstance(result, Deny) and (result.status, result.reason, result.close) == (status, reason, True)
        if status == 426:
            assert ("sec-websocket-version", "13") in result.headers


ANSWER = [("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-accept", accept_value(KEY))]


@pytest.mark.parametrize(("status", "headers", "offered", "expected"), [
    (101, ANSWER, None, None),
    (101, [*ANSWER, ("sec-websocket-protocol", "chat.v1")], "chat.v1, chat.v2", None),
    (403, ANSWER, None, "websocket_upstream_refused"),
    (101, [h for h in ANSWER if h[0] != "sec-websocket-accept"], None, "websocket_upstream_bad_handshake"),
    (101, [*ANSWER[:2], ("sec-websocket-accept", "wrong")], None, "websocket_upstream_bad_handshake"),
    (101, [*ANSWER, ("sec-websocket-extensions", "permessage-deflate")], None, "websocket_upstream_bad_handshake"),
    (101, [*ANSWER, ("sec-websocket-protocol", "other")], "chat.v1", "websocket_upstream_bad_handshake"),
])
def test_upstream_answer(status: int, headers: list[tuple[str, str]], offered: str | None,
                         expected: str | None) -> None:
    handshake = check_handshake("GET", "1.1", GOOD, "p")
    assert not isinstance(handshake, Deny)
    assert check_answer(status, headers, handshake, offered) == expected


def test_which_upgrades_and_which_routes() -> None:
    assert wants_websocket([("upgrade", "WebSocket")])
    assert not wants_websocket([("upgrade", "h2c")]) and not wants_websocket([])
    assert websocket_config(False) is None
    assert websocket_config(True) == WebSocketConfig()
    custom = WebSocketConfig(idle_timeout=5)
    assert websocket_config(custom) is custom
