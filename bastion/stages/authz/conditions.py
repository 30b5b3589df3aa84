"""Declarative conditions in CEL (the expression language of Envoy RBAC, Kubernetes and KrakenD).

Expressions are parsed and type-checked once, when the config is compiled, by the CEL C++ runtime
(`cel-expr-python`); a request only evaluates them. No Python `eval`, no per-request parsing.

Variables (all read-only):
    claims    map(string, dyn)   the token's claims ({} for API keys, certificates and anonymous callers)
    identity  map(string, dyn)   method, subject, consumer, issuer, scopes (list), roles (list)
    path      map(string, string)  matched path parameters
    query     map(string, string)  query parameters (first value of each)
    headers   map(string, string)  request headers, lower-case names (repeated ones joined by ", ")
    method    string             the request method
    source    string             the client IP; `source.inNetwork('10.0.0.0/8')`
    now       timestamp          the wall clock; `now.getHours()` is UTC, `now.getHours('Europe/Paris')` local
    client    map(string, dyn)   client signals (bastion.stages.signals): `country` ("FR"), `reputation` (list
                                 names the address is on); a key is absent without its source, so
                                 `client.country == "FR"` fails closed when no database is configured
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from cel_expr_python import cel

from bastion.context import Identity, RequestContext
from bastion.stages.authz.config import Condition
from bastion.stages.signals import ClientSignals

_T = cel.Type
VARIABLES: dict[str, Any] = {
    "claims": _T.Map(_T.STRING, _T.DYN),
    "identity": _T.Map(_T.STRING, _T.DYN),
    "path": _T.Map(_T.STRING, _T.STRING),
    "query": _T.Map(_T.STRING, _T.STRING),
    "headers": _T.Map(_T.STRING, _T.STRING),
    "method": _T.STRING,
    "source": _T.STRING,
    "now": _T.TIMESTAMP,
    "client": _T.Map(_T.STRING, _T.DYN),
}
_REFERENCE = re.compile(r"\b(" + "|".join(VARIABLES) + r")\b")


@functools.lru_cache(maxsize=256)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


def _in_network(address: str, cidr: str) -> bool:
    net = _network(cidr)
    if net is None:
        return False
    try:
        return ipaddress.ip_address(address) in net
    except ValueError:
        return False


def new_environment() -> Any:
    """The CEL environment every condition is checked against (built once per config load)."""
    in_network = cel.FunctionDecl("inNetwork", [cel.Overload(
        "string_in_network_string", _T.BOOL, [_T.STRING, _T.STRING], is_member=True, impl=_in_network)])
    return cel.NewEnv(variables=VARIABLES, extensions=[cel.CelExtension("bastion", [in_network])])


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    name: str
    expr: str
    program: Any


class ConditionSet:
    """A route's conditions, compiled; `first_failure(ctx)` evaluates them in order."""

    def __init__(self, env: Any, conditions: list[Condition], wall_clock: Callable[[], float],
                 signals: ClientSignals | None = None) -> None:
        compiled = []
        for cond in conditions:
            try:
                program = env.compile(cond.expr)
            except RuntimeError as exc:  # the CEL checker's message points at the column
                raise ValueError(f"authz condition {cond.name!r} ({cond.expr}): {_clean(str(exc))}") from None
            kind = program.return_type()
            if kind != _T.BOOL:
                raise ValueError(f"authz condition {cond.name!r} ({cond.expr}) is of type {kind.name().lower()}; "
                                 "a condition is a boolean expression, e.g. `claims.admin == true`")
            compiled.append(CompiledCondition(cond.name, cond.expr, program))
        self._conditions = tuple(compiled)
        self._env = env
        self._clock = wall_clock
        used = {m for cond in conditions for m in _REFERENCE.findall(cond.expr)}
        builders = dict(_BUILDERS)
        if signals is not None:
            builders["client"] = lambda ctx, _: signals.lookup(ctx.client_ip)
        self._builders = tuple((name, builders[name]) for name in VARIABLES if name in used)

    def __bool__(self) -> bool:
        return bool(self._conditions)

    def activation(self, ctx: RequestContext) -> dict[str, Any]:
        """The variables the route's expressions use (only those: a query string is parsed only if needed)."""
        return {name: build(ctx, self._clock) for name, build in self._builders}

    def first_failure(self, ctx: RequestContext) -> tuple[str, str] | None:
        """None when every condition holds, else (condition name, why) for the first that does not."""
        activation = self._env.Activation(self.activation(ctx))
        for cond in self._conditions:
            result = cond.program.eval(activation)
            if result.type() == _T.BOOL:
                if result.value() is True:
                    continue
                return cond.name, f"condition {cond.name!r} is false: {cond.expr}"
            # a missing claim, a bad conversion, ...: an error is a failure, never a pass
            return cond.name, f"condition {cond.name!r} could not be evaluated ({result.value()}): {cond.expr}"
        return None


def _clean(message: str) -> str:
    return " ".join(line.strip() for line in message.replace("INVALID_ARGUMENT: ", "").splitlines() if line)


def identity_map(identity: Identity | None) -> dict[str, Any]:
    if identity is None:
        return {"method": "anonymous", "subject": None, "consumer": None, "issuer": None, "scopes": [],
                "roles": []}
    return {"method": identity.method, "subject": identity.subject, "consumer": identity.consumer,
            "issuer": identity.issuer, "scopes": sorted(identity.scopes), "roles": sorted(identity.roles)}


def query_map(query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        out.setdefault(key, value)
    return out


def header_map(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers:
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


_BUILDERS: dict[str, Callable[[RequestContext, Callable[[], float]], Any]] = {
    "claims": lambda ctx, _: dict(ctx.identity.claims) if ctx.identity is not None else {},
    "identity": lambda ctx, _: identity_map(ctx.identity),
    "path": lambda ctx, _: ctx.path_params,
    "query": lambda ctx, _: query_map(ctx.query),
    "headers": lambda ctx, _: header_map(ctx.headers),
    "method": lambda ctx, _: ctx.method,
    "source": lambda ctx, _: ctx.client_ip,
    "now": lambda _, clock: datetime.fromtimestamp(clock(), UTC),
    "client": lambda _, __: {},  # no signals configured: every client key is absent
}
