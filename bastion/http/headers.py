"""Header hygiene: hop-by-hop removal, identity-header stripping, client address, request id and trace context."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward. Content-Length is re-framed by us.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer",
    "proxy-authorization", "proxy-authenticate", "content-length",
})
# Forwarding headers are rebuilt by Bastion from what it verified, never passed through as sent.
FORWARDING = frozenset({"x-forwarded-for", "forwarded", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"})


class HeaderNames:
    """A set of header names with `*`-suffixed prefixes, matched without regexes on the hot path."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = [p.lower() for p in patterns]
        self.exact = frozenset(p for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
        self._memo: dict[str, bool] = {}  # header names repeat: one dict lookup per header on the hot path

    def __contains__(self, name: str) -> bool:
        hit = self._memo.get(name)
        if hit is None:
            hit = name in self.exact or (bool(self.prefixes) and name.startswith(self.prefixes))
            if len(self._memo) < 4096:  # bounded: clients choose header names
                self._memo[name] = hit
        return hit

    def filter(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """`headers` without the names in this set."""
        memo = self._memo
        for name, _ in headers:
            hit = memo.get(name)
            if hit is None:
                hit = name in self
            if hit:
                return [(n, v) for n, v in headers if n not in self]
        return headers  # the common case: nothing to strip, no copy


# Headers describing the upstream's software or topology: an attacker's map, never forwarded to clients.
SOFTWARE = frozenset({
    "server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-generator", "x-runtime",
    "x-backend-server", "x-upstream", "x-served-by",
})


# Set by the gateway on every answer: an upstream's copies never reach the client.
SERVER_SET = frozenset({"x-request-id", "traceparent"})
_NOT_FORWARDED = frozenset(name.encode() for name in (*HOP_BY_HOP, *SOFTWARE, *SERVER_SET))


def response_fields(raw: list[tuple[bytes, bytes]], drop: frozenset[bytes] = frozenset(),
                    drop_prefix: bytes | None = None) -> tuple[int | None, bytes] | None:
    """An upstream response's Content-Length and the fields that may reach the client, serialised for an
    HTTP/1.1 head (`name: value\r\n`, lower-case names), straight from the parser's bytes: no hop-by-hop, no
    software, none the gateway sets, none in `drop` or starting with `drop_prefix`.

    None when Connection lists other fields: they must go too, and the caller's general path handles that."""
    length: int | None = None
    parts: list[bytes] = []
    for name, value in raw:
        lname = name.lower()
        if lname in _NOT_FORWARDED or lname in drop:
            if lname == b"content-length":
                length = int(value) if value.isdigit() else None
            elif lname == b"connection" and value.lower().replace(b" ", b"") not in (b"keep-alive", b"close"):
                return None
            continue
        if drop_prefix is not None and lname.startswith(drop_prefix):
            continue
        parts.append(lname + b": " + value + b"\r\n")
    return length, b"".join(parts)


def response_headers(decoded: list[tuple[str, str]]) -> tuple[int | None, list[tuple[str, str]]]:
    """`response_fields` on decoded (lower-case) pairs: the upstream's Content-Length and the fields that may
    reach the client, Connection-listed ones removed too."""
    drop = connection_tokens(decoded)
    length: int | None = None
    headers: list[tuple[str, str]] = []
    for name, value in decoded:
        if name == "content-length":
            length = int(value) if value.isdigit() else None
        elif not (name in HOP_BY_HOP or name in drop or name in SOFTWARE or name in SERVER_SET):
            headers.append((name, value))
    return length, headers


def first_header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of `name` (lower-case) in a lower-cased header list, or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def connection_tokens(headers: list[tuple[str, str]]) -> set[str]:
    """Field names listed in Connection, which are hop-by-hop for this hop only."""
    tokens: set[str] = set()
    for name, value in headers:
        if name == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Peers whose forwarding headers are believed. The client address is found walking from the right."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client_ip(self, peer: str, headers: list[tuple[str, str]]) -> str:
        """The first address, from the right, that is not a trusted proxy (RFC 7239 / XFF practice)."""
        if not self.trusts(peer):
            return peer
        hops: list[str] = []
        for name, value in headers:
            if name == "x-forwarded-for":
                hops.extend(h.strip() for h in value.split(","))
        if not hops:
            for name, value in headers:
                if name == "forwarded":
                    hops.extend(_forwarded_for(value))
        address = peer
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return address  # a malformed hop ends the walk: trust nothing left of it
            address = hop
            if not self.trusts(hop):
                return hop
        return address


# Request fields the gateway never copies upstream: it sets them itself (identity, correlation, framing).
_NEVER_COPIED = frozenset({"expect", "traceparent", "x-request-id", "host"})


def upstream_fields(headers: list[tuple[str, str]], added: list[tuple[str, str]], drop: set[str], *, peer: str,
                    client_ip: str, tls: bool, request_id: str, traceparent: str) -> list[tuple[str, str]]:
    """The fields an upstream request carries, for either protocol: the client's (hop-by-hop, Connection-listed,
    `drop` and forwarding ones removed), then `added` (the stages' identity headers), then the forwarding and
    correlation fields the gateway builds. Framing, `host`/`:authority` and protocol fields are the caller's."""
    drop = drop | connection_tokens(headers)
    fields: list[tuple[str, str]] = []
    prior_xff = ""
    host = ""
    for name, value in headers:
        if name in HOP_BY_HOP or name in drop or name in _NEVER_COPIED or name[0] == ":":
            if name == "host":
                host = value
            continue
        if name in FORWARDING:
            if name == "x-forwarded-for" and client_ip != peer:  # a trusted proxy's chain is extended
                prior_xff = f"{prior_xff}, {value}" if prior_xff else value
            continue
        fields.append((name, value))
    fields.extend(added)
    proto = "https" if tls else "http"
    fields.append(("x-forwarded-for", f"{prior_xff}, {peer}" if prior_xff else peer))
    fields.append(("x-forwarded-proto", proto))
    if host:
        fields.append(("x-forwarded-host", host))
    fields.append(("forwarded", f"for={forwarded_for(client_ip)};proto={proto}"))
    fields.append(("x-request-id", request_id))
    if traceparent:
        fields.append(("traceparent", traceparent))
    return fields


def _forwarded_for(value: str) -> list[str]:
    out = []
    for element in value.split(","):
        for pair in element.split(";"):
            key, _, val = pair.strip().partition("=")
            if key.lower() == "for":
                val = val.strip('"')
                if val.startswith("["):
                    val = val[1:].split("]", 1)[0]
                elif val.count(":") == 1:
                    val = val.split(":", 1)[0]
                out.append(val)
    return out


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_HEX2 = tuple(f"{i:02x}" for i in range(256))
_BATCH = 64  # trace and span ids drawn per os.urandom call
_forks = [0]  # bumped in a forked child, so it never hands out ids its parent had drawn


def _forked() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_forked)


class RequestIds:
    """Unique, cheap request ids: a random per-process prefix (12 hex) and a counter (10 hex, more past 2^40).

    The counter's upper digits are formatted once per 256 ids, the last two looked up: formatting the whole
    counter per request cost ~6 K instructions compiled, this ~0.7 K.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._next = 1
        self._high = self._prefix + "00000000"

    def new(self) -> str:
        n = self._next
        self._next = n + 1
        low = n & 255
        if low == 0:
            self._high = f"{self._prefix}{n >> 8:08x}"
        return self._high + _HEX2[low]


class TraceIds:
    """W3C Trace Context ids for the requests of one process: random trace and span ids, drawn from the OS in
    batches (one `os.urandom` call per 64 requests, ~1.5 K instructions a request against ~5.5 K for a PRNG draw
    formatted per request). Drawn lazily and again after a fork, so no two processes share ids.
    """

    def __init__(self) -> None:
        self._pool = ""
        self._at = 0
        self._fork = -1

    def traceparent(self, incoming: str | None) -> str:
        """Keep a valid incoming trace id and its flags, with the gateway's own span as the new parent; else a
        new trace, sampled."""
        at = self._at
        if at >= len(self._pool) or self._fork != _forks[0]:
            self._pool = os.urandom(24 * _BATCH).hex()
            self._fork = _forks[0]
            at = 0
        self._at = at + 48
        pool = self._pool
        span = pool[at + 32:at + 48]
        if span == _ZERO_SPAN:  # all zeros is invalid (W3C §3.2.2.3)
            span = "0" * 15 + "1"
        if incoming:
            match = _TRACEPARENT.match(incoming.strip())
            if match and match.group(1) != _ZERO_TRACE and match.group(2) != _ZERO_SPAN:
                return f"00-{match.group(1)}-{span}-{match.group(3)}"
        trace = pool[at:at + 32]
        if trace == _ZERO_TRACE:
            trace = "0" * 31 + "1"
        return f"00-{trace}-{span}-01"


def valid_request_id(value: str) -> bool:
    return bool(_REQUEST_ID.match(value))


_TRACE_IDS = TraceIds()


def next_traceparent(incoming: str | None) -> str:
    """W3C Trace Context: `TraceIds.traceparent` on this module's ids (the gateway holds its own `TraceIds`)."""
    return _TRACE_IDS.traceparent(incoming)


def forwarded_for(client: str) -> str:
    return f'"[{client}]"' if ":" in client else client
