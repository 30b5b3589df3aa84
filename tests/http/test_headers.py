"""Header hygiene as tables: client address behind proxies, identity headers, trace context."""

from __future__ import annotations

import ipaddress

import pytest

from bastion.http.headers import HeaderNames, TrustedProxies, next_traceparent, valid_request_id

TRUSTED = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")])


@pytest.mark.parametrize(("peer", "headers", "client"), [
    ("203.0.113.9", [("x-forwarded-for", "1.2.3.4")], "203.0.113.9"),  # untrusted peer: header ignored
    ("10.0.0.1", [("x-forwarded-for", "1.2.3.4")], "1.2.3.4"),
    ("10.0.0.1", [("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2")], "1.2.3.4"),  # walk from the right
    ("10.0.0.1", [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "1.2.3.4")], "1.2.3.4"),
    ("10.0.0.1", [("x-forwarded-for", "garbage, 1.2.3.4")], "1.2.3.4"),
    ("10.0.0.1", [("x-forwarded-for", "10.0.0.3, 10.0.0.2")], "10.0.0.3"),
    ("10.0.0.1", [("forwarded", 'for="[2001:db8::1]:443";proto=https')], "2001:db8::1"),
    ("10.0.0.1", [], "10.0.0.1"),
])
def test_client_ip(peer, headers, client):
    assert TRUSTED.client_ip(peer, headers) == client


def test_identity_header_patterns():
    names = HeaderNames(["x-bastion-*", "X-Forwarded-User"])
    assert "x-bastion-consumer" in names
    assert "x-forwarded-user" in names
    assert "x-forwarded-for" not in names


def test_traceparent_keeps_valid_trace_id_only():
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    out = next_traceparent(incoming)
    assert out.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and out.endswith("-01")
    assert "00f067aa0ba902b7" not in out  # the gateway is the new parent span
    for bad in ("garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", None):
        assert not next_traceparent(bad).startswith("00-4bf92f")


@pytest.mark.parametrize(("value", "ok"), [("abc-123", True), ("a" * 129, False), ("a b", False), ("", False)])
def test_request_id_syntax(value, ok):
    assert valid_request_id(value) is ok
