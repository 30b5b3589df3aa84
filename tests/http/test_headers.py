"""Header hygiene as tables: client address behind proxies, identity headers, trace context."""

from __future__ import annotations

import ipaddress
import os
import re

import pytest

from bastion.http.headers import (
    HeaderNames,
    RequestIds,
    TraceIds,
    TrustedProxies,
    next_traceparent,
    valid_request_id,
)

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


def test_traceparents_are_well_formed_and_unique() -> None:
    ids = TraceIds()
    made = [ids.traceparent(None) for _ in range(1000)]  # several os.urandom batches
    assert len(set(made)) == 1000
    assert len({t[3:35] for t in made}) == 1000 and len({t[36:52] for t in made}) == 1000  # trace and span ids
    for value in made:
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", value), value
        assert value[3:35] != "0" * 32 and value[36:52] != "0" * 16
    kept = ids.traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    assert kept.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and kept.endswith("-00")  # caller's flags
    assert TraceIds().traceparent(None)[3:35] not in {t[3:35] for t in made}


def test_a_forked_child_draws_its_own_trace_ids() -> None:
    ids = TraceIds()
    ids.traceparent(None)  # the parent has a batch drawn
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the next id must not be the parent's next one
        os.write(write, ids.traceparent(None).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child != ids.traceparent(None)


def test_request_ids_are_a_process_prefix_and_a_counter() -> None:
    ids = RequestIds()
    made = [ids.new() for _ in range(70000)]  # past several 256-id blocks of the counter's upper digits
    prefix = made[0][:12]
    assert [int(rid[12:], 16) for rid in made] == list(range(1, 70001))
    assert all(len(rid) == 22 and rid.startswith(prefix) and valid_request_id(rid) for rid in made)
    assert RequestIds().new()[:12] != prefix


@pytest.mark.parametrize(("value", "ok"), [("abc-123", True), ("a" * 129, False), ("a b", False), ("", False)])
def test_request_id_syntax(value, ok):
    assert valid_request_id(value) is ok
