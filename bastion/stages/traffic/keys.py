"""Counting keys: which caller (or route, or claim value) a limit counts a request against.

A key spec such as `consumer+route` is compiled once per route into a function of the request. Values that
depend on identity fall back to the client IP when the request has no identity (or lacks that claim/header),
tagged so an IP can never collide with a consumer name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from bastion.context import RequestContext
from bastion.stages.base import RouteInfo

KeyFunction = Callable[[RequestContext], str]

_MAX_VALUE = 64  # longer (client-chosen) values are hashed: bounded key size in Redis and in memory


def _safe(value: str) -> str:
    if len(value) > _MAX_VALUE:
        return "h:" + hashlib.blake2b(value.encode(), digest_size=12).hexdigest()
    return value


def _claim(claims: dict[str, Any], path: list[str]) -> Any:
    value: Any = claims
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _dimension(spec: str, route: RouteInfo) -> KeyFunction:
    """One dimension of a key as a function of the request."""
    if spec == "route":
        static = "r=" + route.route_id
        return lambda ctx: static
    if spec == "api":
        static = "a=" + route.api
        return lambda ctx: static
    if spec == "class":
        static = "k=" + route.klass
        return lambda ctx: static
    if spec == "client_ip":
        return lambda ctx: "ip=" + ctx.client_ip
    if spec == "consumer":
        def consumer(ctx: RequestContext) -> str:
            identity = ctx.identity
            if identity is not None and identity.consumer:
                return "c=" + _safe(identity.consumer)
            if identity is not None and identity.subject:  # a verified caller without a consumer record
                return "s=" + _safe(f"{identity.issuer or ''}|{identity.subject}")
            return "ip=" + ctx.client_ip
        return consumer
    if spec == "credential":
        def credential(ctx: RequestContext) -> str:
            identity = ctx.identity
            if identity is not None and identity.credential_id:
                return "cr=" + _safe(identity.credential_id)
            return "ip=" + ctx.client_ip
        return credential
    if spec.startswith("claim:"):
        path = spec[len("claim:"):].split(".")
        tag = "cl=" + spec[len("claim:"):] + "="

        def claim(ctx: RequestContext) -> str:
            identity = ctx.identity
            value = _claim(identity.claims, path) if identity is not None else None
            if value is None or isinstance(value, dict | list):
                return "ip=" + ctx.client_ip
            return tag + _safe(str(value))
        return claim
    if spec.startswith("header:"):
        name = spec[len("header:"):]
        tag = "h=" + name + "="

        def header(ctx: RequestContext) -> str:
            value = ctx.header(name)
            return "ip=" + ctx.client_ip if value is None else tag + _safe(value)
        return header
    raise ValueError(f"unknown key dimension {spec!r}")


def key_function(spec: str, route: RouteInfo) -> KeyFunction:
    """`consumer+route` -> a function returning e.g. `c=acme|r=orders/get-order`."""
    parts = [_dimension(part, route) for part in spec.split("+")]
    if len(parts) == 1:
        return parts[0]
    return lambda ctx: "|".join(part(ctx) for part in parts)
