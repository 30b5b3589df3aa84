"""Config model of the GraphQL limits: which routes are GraphQL endpoints and what a query may ask for.

Every field is a control of its own (`graphql.max_depth`, `graphql.introspection`, ...), so an exception can relax
one limit for one route, and `validate` can tell a stricter value from a weaker one.

```yaml
classes:
  public:
    graphql:
      enabled: auto              # auto: routes whose path ends in /graphql; true: every route it applies to
      max_depth: 10
      max_cost: 5000
      introspection: false
apis:
  - name: shop
    policy:
      graphql:
        operation_scopes: {createOrder: [orders:write], refundOrder: [orders:write, payments:refund]}
```
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, field_serializer, field_validator

from bastion.config.base import Model, control
from bastion.stages.authz.config import SCOPE_TOKEN

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")  # GraphQL Name (spec §2.1.9)


def _scope_pairs(value: Any) -> Any:
    """`{createOrder: [orders:write]}` -> `(("createOrder", "orders:write"),)`, sorted.

    Stored as (name, scope) pairs so that the `superset` comparison sees every scope: a route that keeps the key
    `createOrder` but drops one of its scopes is weaker than its class, and `validate` says so. Dumped back as
    the mapping (see `_dump_scopes`)."""
    if isinstance(value, dict):
        pairs = []
        for name, scopes in value.items():
            if isinstance(scopes, str) or not isinstance(scopes, list | tuple):
                raise ValueError(f"operation_scopes.{name}: expected a list of scopes, e.g. [orders:write]")
            pairs += [(name, scope) for scope in scopes]
        return tuple(sorted(set(pairs)))
    if isinstance(value, list | tuple):  # already pairs (a dumped policy read back)
        return tuple(sorted({(p[0], p[1]) for p in value if isinstance(p, list | tuple) and len(p) == 2}))
    return value


ScopePairs = Annotated[tuple[tuple[str, str], ...], BeforeValidator(_scope_pairs)]


class GraphqlPolicy(Model):
    """`graphql: {enabled: true, max_depth: 10, max_cost: 5000, introspection: false}`"""

    enabled: Literal["auto"] | bool = control(
        "auto", stricter="order", order=("False", "auto", "True"),
        description="Which routes are GraphQL endpoints: `auto` (default) those whose path ends in `/graphql`, "
                    "`true` every route the policy applies to (set it on the API or route), `false` none.",
    )
    max_query_length: int = control(
        20_000, stricter="lower", ge=1,
        description="Longest query document, in characters, checked before parsing (comments and whitespace "
                    "count), e.g. `max_query_length: 8000`.",
    )
    max_tokens: int = control(
        5_000, stricter="lower", ge=1,
        description="Most lexical tokens (comments included) the parser reads before giving up.",
    )
    max_depth: int = control(
        12, stricter="lower", ge=1, le=200,
        description="Deepest field nesting, through fragment spreads and inline fragments (`{a {b}}` is 2).",
    )
    max_cost: int = control(
        10_000, stricter="lower", ge=1,
        description="Cost budget of one request (summed over a batch): each field costs 1, times the list size "
                    "its `list_arguments` ask for, and its sub-selection is multiplied the same way.",
    )
    list_arguments: list[str] = control(
        ["first", "last", "limit"], stricter="superset",
        description="Arguments whose integer value multiplies a field's cost (page sizes).",
    )
    default_list_size: int = control(
        100, stricter="higher", ge=1,
        description="Multiplier of a list argument whose value is not known (a variable without a value).",
    )
    max_aliases: int = control(
        15, stricter="lower", ge=0,
        description="Most aliases in one request (alias batching: `a1: login(...) a2: login(...)`).",
    )
    max_batch: int = control(
        5, stricter="lower", ge=1,
        description="Most operations in one batched (JSON array) request; `1` refuses batching.",
    )
    max_directives: int = control(
        20, stricter="lower", ge=0,
        description="Most directive uses (`@include`, `@skip`, ...) in one request.",
    )
    introspection: bool = control(
        False, stricter="false",
        description="Allow `__schema` and `__type` introspection queries (`__typename` is always allowed).",
    )
    persisted_only: bool = control(
        False, stricter="true",
        description="Refuse every query whose SHA-256 is not in `persisted_queries`. With `false`, a query that "
                    "is not listed is let through and recorded as a detection (for rollout).",
    )
    persisted_queries: list[str] = control(
        [], stricter="free",
        description="SHA-256 (hex) of the query documents the API's own clients send: the API's data, like its "
                    "OpenAPI operations; `persisted_only` is the control that makes it binding.",
    )
    operation_scopes: ScopePairs = control(
        (), stricter="superset",
        description="Scopes a caller needs, per operation name or root field name, e.g. "
                    "`{createOrder: [orders:write]}` (403 insufficient_scope otherwise).",
    )

    @field_validator("persisted_queries")
    @classmethod
    def _hashes(cls, value: list[str]) -> list[str]:
        out = [h.lower() for h in value]
        for digest in out:
            if not _SHA256.match(digest):
                raise ValueError(f"persisted_queries: {digest!r} is not a SHA-256 hex digest (64 hex digits)")
        return out

    @field_validator("list_arguments")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"list_arguments: {name!r} is not a GraphQL argument name")
        return value

    @field_validator("operation_scopes")
    @classmethod
    def _scopes(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for name, scope in value:
            if not _NAME.match(name):
                raise ValueError(f"operation_scopes: {name!r} is not a GraphQL operation or field name")
            if not SCOPE_TOKEN.match(scope):
                raise ValueError(f"operation_scopes.{name}: {scope!r} is not a valid scope token (RFC 6749 §3.3)")
        return value

    @field_serializer("operation_scopes")
    def _dump_scopes(self, value: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
        """Dumped as the YAML mapping: the baseline merge then overlays an API's or route's keys one by one,
        so adding `refund` keeps the class's `createOrder`, while replacing `createOrder`'s list is compared."""
        out: dict[str, list[str]] = {}
        for name, scope in value:
            out.setdefault(name, []).append(scope)
        return out

    def scopes_by_name(self) -> dict[str, frozenset[str]]:
        """`{"createOrder": frozenset({"orders:write"})}`, from the stored pairs."""
        out: dict[str, set[str]] = {}
        for name, scope in self.operation_scopes:
            out.setdefault(name, set()).add(scope)
        return {name: frozenset(scopes) for name, scopes in out.items()}
