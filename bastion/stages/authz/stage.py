"""The authorisation stages of a route.

`AuthzStage` runs on the request head, right after identity, in a fixed order: identity present, scopes,
administrative role, roles, conditions, owner rules on path/query/header ids, OPA, Cedar. `AuthzBodyStage`
(`needs_body = True`) runs the owner rules that read the JSON body, once it is buffered.

The client sees only the RFC 6750 / RFC 9457 answer; the audit event gets the policy id of the control that
decided and, for a deny, exactly what was missing (`log_detail`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bastion import policy_ids as ids
from bastion.context import Continue, ControlRecord, Decision, Deny, RequestContext
from bastion.stages.authz.cache import DecisionCache
from bastion.stages.authz.client import HttpClient
from bastion.stages.authz.conditions import ConditionSet, new_environment
from bastion.stages.authz.config import AuthzPolicy, OpaConfig, RoleClause
from bastion.stages.authz.engines import CedarEngine, OpaClient, describe_request
from bastion.stages.authz.owner import BodyError, OwnerCheck, OwnerLookups, OwnerOutcome, parse_body
from bastion.stages.authz.scopes import ScopeRequirement, challenge, requirement
from bastion.stages.base import RouteInfo, Services, SharedBase
from bastion.stages.signals import signals_for

DETAIL = {
    "identity_required": "This resource requires an authenticated caller.",
    "scope_missing": "The access token does not carry a scope this operation requires.",
    "admin_role_missing": "This operation is restricted to administrators.",
    "role_missing": "The caller does not have a role this operation requires.",
    "condition_failed": "The request does not meet an access condition of this operation.",
    "object_id_missing": "The request does not name the object it acts on.",
    "owner_mismatch": "The caller may not access this object.",
    "ownership_unavailable": "Access to the object could not be verified; try again later.",
    "opa_denied": "The access policy does not allow this request.",
    "opa_unavailable": "The access policy could not be evaluated; try again later.",
    "cedar_denied": "The access policy does not allow this request.",
}
_SPECIFIC = ("route/", "exception:", "api/")  # most specific origin first, for the id of an allow


class AuthzShared(SharedBase):
    """Built once per config load: the CEL environment, the HTTP client and the decision caches.

    Call `await close()` when the config is replaced (it closes idle connections to OPA/ownership services).
    """

    def __init__(self, config: Any, services: Services) -> None:
        self.services = services
        self.cel = new_environment()
        # client.country / client.reputation for conditions (None: a config without `gateway`, in unit tests)
        self.signals = signals_for(config, services.monotonic) if hasattr(config, "gateway") else None
        self.client = HttpClient()
        self.owners = OwnerLookups(self.client, services.monotonic)
        self.tenants: dict[str, str] = {}
        for consumer in getattr(config, "consumers", None) or ():
            tenant = getattr(consumer, "tenant", None)
            if tenant:
                self.tenants[consumer.name] = str(tenant)
        self._opa: dict[str, OpaClient] = {}
        self._cedar: dict[str, Any] = {}
        self._probe: asyncio.Task[None] | None = None

    def opa(self, config: OpaConfig) -> OpaClient:
        """One client and decision cache per distinct OPA config (routes sharing it share the cache)."""
        key = config.model_dump_json()
        client = self._opa.get(key)
        if client is None:
            client = self._opa[key] = OpaClient(config, self.client, self.services.monotonic)
        return client

    def cedar(self, path: Any) -> Any:
        key = str(path)
        if key not in self._cedar:
            self._cedar[key] = CedarEngine.load(path)
        return self._cedar[key]

    async def start(self) -> None:
        """Probe the fail-closed OPA endpoints once a second, for `/readyz` (`readiness`)."""
        if any(c.config.on_error == "closed" for c in self._opa.values()):
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.gather(*(c.probe() for c in self._opa.values() if c.config.on_error == "closed"))
            await asyncio.sleep(1.0)

    def readiness(self) -> list[str]:
        """Reasons not to take traffic: a policy engine that fail-closed routes need does not answer."""
        return [f"policy_engine_unavailable: OPA {c.endpoint} does not answer" for c in self._opa.values()
                if c.config.on_error == "closed" and not c.available]

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.client.close()


def is_administrative(policy: AuthzPolicy, route: RouteInfo) -> bool:
    return policy.administrative or bool((route.operation or {}).get("x-bastion-admin") is True)


def missing_owner(route: RouteInfo, policy: AuthzPolicy) -> bool:
    """For `validate`: the class requires owner rules and this route takes a path parameter but has none."""
    return policy.require_owner and bool(route.path_params) and not policy.owner


def _clause_gap(clause: RoleClause, roles: frozenset[str]) -> str | None:
    if clause.any_of and roles.isdisjoint(clause.any_of):
        return "any of [" + " ".join(clause.any_of) + "]"
    missing = [r for r in clause.all_of if r not in roles]
    if missing:
        return "all of [" + " ".join(clause.all_of) + "] (lacks " + " ".join(missing) + ")"
    return None


class _Ids:
    """Policy ids of the route's authz controls, and the exception that relaxed any of them."""

    def __init__(self, route: RouteInfo, policy: AuthzPolicy, admin_from_openapi: bool) -> None:
        self.route = route
        self.scopes = (route.policy_id("authz.scopes") if policy.scopes or "authz.scopes" in route.sources
                       else ids.policy_id("openapi", route.api, route.route, "authz.scopes"))
        self.admin = route.policy_id("authz.admin_roles")
        if admin_from_openapi and not policy.administrative:
            self.administrative = ids.policy_id("openapi", route.api, route.route, "authz.administrative")
        else:
            self.administrative = route.policy_id("authz.administrative")
        self.roles = route.policy_id("authz.roles")
        self.conditions = route.policy_id("authz.conditions")
        self.owner = route.policy_id("authz.owner")
        self.opa = route.policy_id("authz.opa")
        self.cedar = route.policy_id("authz.cedar")

    def allow(self, active: list[str]) -> tuple[str, str | None]:
        """The id of an allow: the most specific origin among the controls that were checked."""
        ids = [getattr(self, name) for name in active] or [self.route.policy_id("authz")]
        chosen = next((i for prefix in _SPECIFIC for i in ids if i.startswith(prefix)), ids[0])
        exception = next((i.split("/", 1)[0][10:] for i in ids if i.startswith("exception:")), None)
        return chosen, exception


class AuthzStage:
    """Scopes, roles, conditions, head owner rules and policy engines of one route."""

    control = "authz"
    needs_body = False

    def __init__(self, policy: AuthzPolicy, route: RouteInfo, shared: AuthzShared) -> None:
        self.route = route
        self.admin = is_administrative(policy, route)
        self.scopes: ScopeRequirement = requirement(policy, route)
        if policy.require_scopes and not self.scopes.declared:
            raise ValueError(f"route {route.route_id} requires no scope, but its class sets authz.require_scopes: "
                             "declare scopes in the OpenAPI `security` or in authz.scopes (or add an exception "
                             "naming authz.require_scopes)")
        if missing_owner(route, policy):
            raise ValueError(f"route {route.route_id} ({route.path}) takes an object id in its path but has no "
                             "authz.owner rule, and its class sets authz.require_owner (add a rule, or an "
                             "exception naming authz.require_owner)")
        if self.admin and not policy.admin_roles:
            raise ValueError(f"route {route.route_id} is administrative but no authz.admin_roles are set: name the "
                             "roles that may call it")
        self.admin_roles = frozenset(policy.admin_roles)
        self.roles = tuple(policy.roles)
        self.conditions = ConditionSet(shared.cel, policy.conditions, shared.services.wall_clock, shared.signals)
        checks = [OwnerCheck(rule, route, shared.tenants) for rule in policy.owner]
        self.owners = tuple(c for c in checks if not c.rule.on_body)
        self.body_owners = tuple(c for c in checks if c.rule.on_body)
        self.owner_lookups = shared.owners
        self.opa = shared.opa(policy.opa) if policy.opa.url is not None else None
        self.opa_headers = tuple(policy.opa.headers)
        self.cedar = (CedarEngine(policy.cedar, route, self.admin, shared.cedar(policy.cedar.policies))
                      if policy.cedar.policies is not None else None)
        self.needs_identity = bool(self.scopes.needs_identity or self.roles or self.admin or checks)
        self.ids = _Ids(route, policy, self.admin and not policy.administrative)
        active = [name for name, on in (
            ("scopes", self.scopes.active or self.scopes.needs_identity), ("administrative", self.admin),
            ("roles", bool(self.roles)), ("conditions", bool(self.conditions)), ("owner", bool(checks)),
            ("opa", self.opa is not None), ("cedar", self.cedar is not None)) if on]
        self.active = active
        self._allow = Continue(*self.ids.allow(active))

    @property
    def enabled(self) -> bool:
        """Anything to do on the request head."""
        return bool(self.active) and (self.active != ["owner"] or bool(self.owners))

    def requirements(self) -> list[str]:
        """One line per requirement and the policy id it comes from (for `explain`)."""
        lines = []
        if "scopes" in self.active:
            lines.append(f"scopes: {self.scopes.describe()}  [{self.ids.scopes}]")
        if self.admin:
            lines.append(f"administrative: needs any of [{' '.join(sorted(self.admin_roles))}]  "
                         f"[{self.ids.administrative}]")
        for clause in self.roles:
            lines.append(f"roles: {_describe_clause(clause)}  [{self.ids.roles}]")
        for cond in self.conditions._conditions:
            lines.append(f"condition {cond.name}: {cond.expr}  [{self.ids.conditions}]")
        for check in (*self.owners, *self.body_owners):
            lines.append(f"owner: {check.describe()}  [{self.ids.owner}]")
        if self.opa is not None:
            lines.append(f"opa: POST {self.opa.endpoint} (on_error {self.opa.config.on_error})  [{self.ids.opa}]")
        if self.cedar is not None:
            lines.append(f"cedar: {self.cedar.config.policies}  [{self.ids.cedar}]")
        return lines

    def _deny(self, status: int, reason: str, policy_id: str, log: str,
              headers: tuple[tuple[str, str], ...] = ()) -> Deny:
        return Deny(status, reason, policy_id, DETAIL[reason], headers, f"{self.route.route_id}: {log}")

    async def check(self, ctx: RequestContext) -> Decision:
        identity = ctx.identity
        anonymous = identity is None or identity.method == "anonymous"
        if anonymous and self.needs_identity:
            return self._deny(401, "identity_required", self._identity_id(), "no authenticated caller",
                              challenge())
        if identity is not None and not anonymous:
            missing = self.scopes.missing(identity.scopes)
            if missing is not None:
                return self._deny(403, "scope_missing", self.ids.scopes,
                                  f"missing scopes: {' '.join(sorted(missing))} (required {self.scopes.describe()};"
                                  f" granted: {' '.join(sorted(identity.scopes)) or 'none'})",
                                  challenge(self.scopes.advertised(), insufficient=True))
            if self.admin and identity.roles.isdisjoint(self.admin_roles):
                return self._deny(403, "admin_role_missing", self.ids.admin,
                                  f"administrative route needs any of [{' '.join(sorted(self.admin_roles))}]; "
                                  f"roles: {' '.join(sorted(identity.roles)) or 'none'}")
            for clause in self.roles:
                gap = _clause_gap(clause, identity.roles)
                if gap is not None:
                    return self._deny(403, "role_missing", self.ids.roles,
                                      f"role missing: needs {gap}; roles: {' '.join(sorted(identity.roles)) or 'none'}")
        if self.conditions:
            failed = self.conditions.first_failure(ctx)
            if failed is not None:
                return self._deny(403, "condition_failed", self.ids.conditions, failed[1])
        for owner in self.owners:
            outcome = await owner.check(ctx, self.owner_lookups)
            if not outcome.ok:
                return self._owner_deny(outcome)
            if outcome.fail_open:
                ctx.records.append(ControlRecord("authz", "allow", self.ids.owner, "ownership_unavailable_open"))
        if self.opa is not None:
            verdict = await self.opa.decide(describe_request(ctx, self.route, self.admin, self.opa_headers))
            if verdict.unavailable:
                if self.opa.config.on_error == "closed":
                    return self._deny(503, "opa_unavailable", self.ids.opa, verdict.log)
                ctx.records.append(ControlRecord("authz", "allow", self.ids.opa, "opa_unavailable_open"))
            elif not verdict.allowed:
                return self._deny(403, "opa_denied", self.ids.opa, verdict.log)
        if self.cedar is not None:
            verdict = self.cedar.decide(ctx)
            if not verdict.allowed:
                return self._deny(403, "cedar_denied", self.ids.cedar, verdict.log)
        return self._allow

    def _owner_deny(self, outcome: OwnerOutcome) -> Deny:
        headers = challenge() if outcome.status == 401 else ()
        return self._deny(outcome.status, outcome.reason, self.ids.owner, outcome.log, headers)

    def _identity_id(self) -> str:
        if self.scopes.needs_identity:
            return self.ids.scopes
        if self.admin:
            return self.ids.administrative
        if self.roles:
            return self.ids.roles
        return self.ids.owner


class AuthzBodyStage:
    """Owner rules on JSON body fields (`from: body./account/id`); runs once the body is buffered."""

    control = "authz"
    needs_body = True

    def __init__(self, head: AuthzStage) -> None:
        self._head = head
        self._checks = head.body_owners
        self._allow = Continue(head.ids.owner, head._allow.exception_id)

    async def check(self, ctx: RequestContext) -> Decision:
        head = self._head
        identity = ctx.identity
        if identity is None or identity.method == "anonymous":
            return head._deny(401, "identity_required", head.ids.owner, "no authenticated caller", challenge())
        doc: Any = None
        try:
            doc = parse_body(ctx.body)
        except BodyError as exc:
            if not all(c.rule.optional for c in self._checks) or str(exc) != "no body":
                return head._deny(403, "object_id_missing", head.ids.owner, f"owner rules read the body: {exc}")
        for owner in self._checks:
            outcome = await owner.check(ctx, head.owner_lookups, doc)
            if not outcome.ok:
                return head._owner_deny(outcome)
            if outcome.fail_open:
                ctx.records.append(ControlRecord("authz", "allow", head.ids.owner, "ownership_unavailable_open"))
        return self._allow


def _describe_clause(clause: RoleClause) -> str:
    parts = []
    if clause.any_of:
        parts.append("any of [" + " ".join(clause.any_of) + "]")
    if clause.all_of:
        parts.append("all of [" + " ".join(clause.all_of) + "]")
    return " and ".join(parts)


__all__ = ["AuthzBodyStage", "AuthzShared", "AuthzStage", "DecisionCache", "missing_owner"]
