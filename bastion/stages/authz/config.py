"""Config model of the authorisation layer: `authz: {...}` in a class, an API or a route policy.

```yaml
authz:
  scopes: [orders:read]                      # AND, on top of the OpenAPI operation's `security`
  require_scopes: true                       # validate: every route must require at least one scope
  roles: [{any_of: [clerk, manager]}]        # every clause must hold
  admin_roles: [platform-admin]              # administrative routes need one of these
  conditions:
    - {name: same-tenant, expr: "claims.tenant == path.tenant_id"}
  owner:
    - {from: path.account_id, in: "claim:accounts"}
  opa: {url: http://127.0.0.1:8181, path: bastion/allow}
  cedar: {policies: /etc/bastion/orders.cedar}
```

Requirement lists (`scopes`, `roles`, `conditions`, `owner`) compare as supersets: a route may add items, and a
route whose list lacks one of its class's items is weaker (validate names it). Lists replace, they do not merge,
so a route that adds a condition repeats its class's conditions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from bastion.config.base import Duration, Model, Size, control

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); it goes verbatim into WWW-Authenticate
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
_SOURCE = re.compile(r"^(path|query|header)\.[A-Za-z0-9_.~-]+$|^body\.(/.*)?$")
_SUBJECT = re.compile(r"^claim:[A-Za-z0-9_:$-]+(\.[A-Za-z0-9_:$-]+)*$|^(subject|consumer|consumer_tenant)$")


def _as_list(value: Any) -> Any:
    """A single mapping is a list of one (`roles: {any_of: [a]}` == `roles: [{any_of: [a]}]`)."""
    return [value] if isinstance(value, dict) else value


def _named(value: Any) -> Any:
    """`conditions: {same-tenant: "expr"}` == `conditions: [{name: same-tenant, expr: "expr"}]`."""
    if isinstance(value, dict):
        return [{"name": name, "expr": expr} for name, expr in value.items()]
    return value


class RoleClause(Model):
    """One role requirement: `{any_of: [clerk, manager]}`, `{all_of: [auditor, eu]}` (both: both must hold)."""

    any_of: list[str] = Field(default_factory=list, description="The caller has at least one of these roles.")
    all_of: list[str] = Field(default_factory=list, description="The caller has every one of these roles.")

    @model_validator(mode="after")
    def _something(self) -> RoleClause:
        if not self.any_of and not self.all_of:
            raise ValueError("a role clause names `any_of` or `all_of` roles")
        return self


class Condition(Model):
    """`{name: same-tenant, expr: "claims.tenant == path.tenant_id"}`: a CEL expression that must be true."""

    name: str = Field(pattern=_NAME, description="Named in the audit event when the condition fails.")
    expr: str = Field(min_length=1, description="A boolean CEL expression (type-checked when loaded).")


class OwnerLookup(Model):
    """Ask an ownership service what the token cannot know: `GET url?object=<id>&subject=<sub>`.

    `lookup: {url: http://owners.internal/owner, timeout: 200ms, cache_ttl: 30s}`; the service answers 200
    `{"allowed": true}`. Anything else is a no; a timeout or an unreachable service fails closed (503) unless
    `on_error: open`.
    """

    url: str = Field(pattern=r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
    timeout: Duration = Field(0.2, gt=0, description="Whole request (connect, send, answer), e.g. `200ms`.")
    cache_ttl: Duration = Field(30.0, description="How long an answer (yes or no) is reused; 0 turns caching off.")
    cache_size: int = Field(10_000, ge=0, description="Most cached answers (oldest go first).")
    on_error: Literal["closed", "open"] = Field("closed", description="`open` lets the request through when the "
                                                "service cannot answer (audited).")


class OwnerRule(Model):
    """Object-level authorisation (OWASP API1:2023): the object id in the request belongs to the caller.

    `{from: path.account_id, in: "claim:accounts"}`, `{from: query.user, equals: "claim:sub"}`,
    `{from: body./order/tenant, equals: consumer_tenant}`, `{from: path.id, lookup: {url: ...}}`.
    """

    source: str = Field(alias="from", description="Where the object id is: `path.<param>`, `query.<name>` "
                        "(every value is checked), `header.<name>` or `body.<JSON pointer>` (RFC 6901).")
    equals: str | None = Field(None, description="The id equals `claim:<path>`, `subject`, `consumer` or "
                               "`consumer_tenant`.")
    within: str | None = Field(None, alias="in", description="The id is one of the list claim `claim:<path>`.")
    lookup: OwnerLookup | None = Field(None, description="The ownership service decides.")
    optional: bool = Field(False, description="A request without the id passes (default: denied, because an "
                           "upstream may read a missing id as 'all objects').")

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not _SOURCE.match(value):
            raise ValueError(f"owner `from: {value}`: use path.<param>, query.<name>, header.<name> or "
                             "body./json/pointer")
        return value

    @model_validator(mode="after")
    def _one(self) -> OwnerRule:
        given = [x is not None for x in (self.equals, self.within, self.lookup)]
        if sum(given) != 1:
            raise ValueError(f"owner rule on {self.source}: give exactly one of `equals`, `in` or `lookup`")
        for ref in (self.equals, self.within):
            if ref is not None and not _SUBJECT.match(ref):
                raise ValueError(f"owner rule on {self.source}: {ref!r} is not claim:<path>, subject, consumer "
                                 "or consumer_tenant")
        if self.within is not None and not self.within.startswith("claim:"):
            raise ValueError(f"owner rule on {self.source}: `in` takes a list claim, e.g. claim:accounts")
        return self

    @property
    def on_body(self) -> bool:
        return self.source.startswith("body.")


class OpaConfig(Model):
    """Open Policy Agent over its data API: `opa: {url: http://127.0.0.1:8181, path: bastion/allow}`.

    Bastion sends `POST <url>/v1/data/<path>` with `{"input": {...}}` and expects `{"result": true}` or
    `{"result": {"allow": true, "reason": "..."}}`. An undefined result is a no.
    """

    url: str | None = control(
        None, stricter="true", pattern=r"^https?://[^/\s?#]+/?$",
        description="OPA's base URL, e.g. `http://127.0.0.1:8181` (unset: OPA is not asked).",
    )
    path: str = control(
        "bastion/allow", stricter="free", pattern=r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*$",
        description="The rule's package path, e.g. `bastion/allow` for `package bastion` rule `allow`.",
    )
    timeout: Duration = control(0.1, stricter="free", gt=0, description="Whole request, e.g. `100ms`.")
    cache_ttl: Duration = control(
        5.0, stricter="lower", description="How long a decision for the same input is reused (0: never).",
    )
    cache_size: int = control(10_000, stricter="free", ge=0, description="Most cached decisions.")
    on_error: Literal["closed", "open"] = control(
        "closed", stricter="order", order=("open", "closed"),
        description="When OPA cannot answer: `closed` refuses (503), `open` lets the request through (audited).",
    )
    max_response: Size = control(64 * 1024, stricter="free", description="Largest answer read from OPA.")
    headers: list[str] = control(
        [], stricter="free",
        description="Request headers included in the input, e.g. `[x-tenant]` (lower-case; credentials never).",
    )

    @field_validator("headers")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [name.lower() for name in value]


class CedarConfig(Model):
    """Cedar policies evaluated in-process: `cedar: {policies: /etc/bastion/orders.cedar}`.

    The request is `principal` = `User::"<subject>"` (member of `Role::"<role>"` for each role), `action` =
    `Action::"<METHOD>"`, `resource` = `Route::"<api>/<route>"`, and a `context` with the request and claims.
    """

    policies: Path | None = control(
        None, stricter="true", description="A `.cedar` file (unset: Cedar is not asked).",
    )
    principal_type: str = control("User", stricter="free", pattern=r"^[A-Z][A-Za-z0-9_]*$",
                                  description="Entity type of the caller.")


Roles = Annotated[list[RoleClause], BeforeValidator(_as_list)]
Conditions = Annotated[list[Condition], BeforeValidator(_named)]
Owners = Annotated[list[OwnerRule], BeforeValidator(_as_list)]


class AuthzPolicy(Model):
    """`authz: {...}`: what an authenticated caller may do on a route. Everything is off by default."""

    scopes: list[str] = control(
        [], stricter="superset",
        description="Scopes every caller must have (AND), on top of the OpenAPI `security` requirements, "
                    "e.g. `scopes: [orders:read]`.",
    )
    require_scopes: bool = control(
        False, stricter="true",
        description="Every route must require at least one scope (from OpenAPI `security` or `scopes`); "
                    "validate names the routes that don't.",
    )
    roles: Roles = control(
        [], stricter="superset",
        description="Role clauses, all of which must hold: `roles: [{any_of: [clerk, manager]}]`.",
    )
    administrative: bool = control(
        False, stricter="true",
        description="The route is administrative (also set by `x-bastion-admin: true` in OpenAPI): the caller "
                    "needs one of `admin_roles`.",
    )
    admin_roles: list[str] = control(
        [], stricter="subset",
        description="Roles that may call administrative routes (any of them), e.g. `[platform-admin]`.",
    )
    conditions: Conditions = control(
        [], stricter="superset",
        description="Named CEL conditions that must all be true, e.g. "
                    "`[{name: same-tenant, expr: \"claims.tenant == path.tenant_id\"}]`.",
    )
    owner: Owners = control(
        [], stricter="superset",
        description="Object ownership rules, all of which must hold, e.g. "
                    "`owner: {from: path.account_id, in: \"claim:accounts\"}`.",
    )
    require_owner: bool = control(
        False, stricter="true",
        description="Every route with a path parameter must have an `owner` rule (or an exception naming "
                    "authz.require_owner); validate names the routes that don't.",
    )
    opa: OpaConfig = OpaConfig()
    cedar: CedarConfig = CedarConfig()

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not SCOPE_TOKEN.match(scope):
                raise ValueError(f"{scope!r} is not a valid scope token (RFC 6749 §3.3: no spaces, quotes or "
                                 "backslashes)")
        return value

    @field_validator("conditions")
    @classmethod
    def _unique_names(cls, value: list[Condition]) -> list[Condition]:
        names = [c.name for c in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"condition names must be unique: {', '.join(dup)}")
        return value
