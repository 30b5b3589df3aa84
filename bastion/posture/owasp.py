"""Which OWASP API Security Top 10 (2023) risks a route's controls answer, written once as data.

Each rule names one control, the categories it answers, the fact about the route's plan that must hold for the
control to be *in force* there (a setting left at "unset" or "allow everything" is not in force), and why it
answers them. A route is credited a category only by rules whose fact holds on the plan the data plane enforces
at that instant; the report lists the rules that credited it, so every claim can be checked.

API10 (unsafe consumption of third-party APIs) is a property of the upstream's own code: no gateway control
answers it, and the report says so rather than claiming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bastion.compile import CompiledRoute, Plan
from bastion.posture.controls import Demands, demands, section

CATEGORIES: dict[str, str] = {
    "API1:2023": "Broken Object Level Authorization",
    "API2:2023": "Broken Authentication",
    "API3:2023": "Broken Object Property Level Authorization",
    "API4:2023": "Unrestricted Resource Consumption",
    "API5:2023": "Broken Function Level Authorization",
    "API6:2023": "Unrestricted Access to Sensitive Business Flows",
    "API7:2023": "Server Side Request Forgery",
    "API8:2023": "Security Misconfiguration",
    "API9:2023": "Improper Inventory Management",
    "API10:2023": "Unsafe Consumption of APIs",
}

_OPEN_NETWORKS = frozenset({"0.0.0.0/0", "::/0"})


@dataclass(frozen=True, slots=True)
class Facts:
    """What the plan in force on one route actually enforces, as the rules need it."""

    need: Demands
    route: CompiledRoute
    plan: Plan
    authz: Any  # the authz section in force, or None when waived
    traffic: Any
    inputs: Any


@dataclass(frozen=True, slots=True)
class Rule:
    """`control` answers `categories` on a route where `holds(facts)`; `why` says how, for the report."""

    control: str
    categories: tuple[str, ...]
    holds: Callable[[Facts], bool]
    why: str


def _administrative(f: Facts) -> bool:
    return f.route.admin or bool(getattr(f.authz, "administrative", False))


def _operation(f: Facts) -> bool:
    return f.route.info.operation is not None


RULES: tuple[Rule, ...] = (
    Rule("transport.tls", ("API2:2023", "API8:2023"), lambda f: f.need.tls,
         "credentials and tokens only travel over TLS"),
    Rule("transport.mtls", ("API2:2023",), lambda f: f.need.mtls, "callers present a client certificate"),
    Rule("transport.revocation", ("API2:2023",),
         lambda f: f.need.mtls and getattr(section(f.plan, "transport"), "revocation", "off") != "off",
         "revoked client certificates are refused (CRL / OCSP)"),
    Rule("transport.min_tls", ("API8:2023",),
         lambda f: f.need.tls and getattr(section(f.plan, "transport"), "min_tls", "1.2") == "1.3",
         "only TLS 1.3 is accepted"),
    Rule("identity.required", ("API2:2023",), lambda f: f.need.identity_required,
         "anonymous callers are refused; credentials are verified"),
    Rule("identity.require_consumer", ("API2:2023", "API9:2023"),
         lambda f: f.need.identity_required and bool(getattr(section(f.plan, "identity"), "require_consumer", 0)),
         "every caller is a registered consumer"),
    Rule("identity.require_bound_tokens", ("API2:2023",),
         lambda f: f.need.identity_required and bool(getattr(section(f.plan, "identity"), "require_bound_tokens", 0)),
         "tokens are bound to the client's certificate or key"),
    Rule("authz.scopes", ("API5:2023",), lambda f: bool(f.need.scopes), "callers need the route's scopes"),
    Rule("authz.roles", ("API5:2023",), lambda f: bool(getattr(f.authz, "roles", None)),
         "callers need one of the route's roles"),
    Rule("authz.admin_roles", ("API5:2023",),
         lambda f: _administrative(f) and bool(getattr(f.authz, "admin_roles", None)),
         "an administrative route needs an admin role"),
    Rule("authz.opa", ("API1:2023", "API5:2023"), lambda f: getattr(getattr(f.authz, "opa", None), "url", None)
         is not None, "an OPA policy decides every request"),
    Rule("authz.cedar", ("API1:2023", "API5:2023"),
         lambda f: getattr(getattr(f.authz, "cedar", None), "policies", None) is not None,
         "a Cedar policy decides every request"),
    Rule("authz.owner", ("API1:2023",), lambda f: f.need.owner_rule, "the caller must own the object named"),
    Rule("authz.conditions", ("API1:2023", "API5:2023"), lambda f: bool(getattr(f.authz, "conditions", None)),
         "CEL conditions on the caller and request must hold"),
    # API6 (sensitive business flows) is credited only where a flow has a step on the route (posture/transport.py):
    # a plain rate limit knows nothing of a flow's order or tempo
    Rule("traffic.rate_limits", ("API4:2023",), lambda f: bool(f.need.rate_limits),
         "requests per caller are limited"),
    Rule("traffic.quotas", ("API4:2023",), lambda f: bool(getattr(f.traffic, "quotas", None)),
         "usage per caller is capped over a period"),
    Rule("traffic.max_body_bytes", ("API4:2023",), lambda f: f.traffic is not None,
         "request bodies are bounded"),
    Rule("traffic.max_concurrent", ("API4:2023",), lambda f: getattr(f.traffic, "max_concurrent", None) is not None,
         "concurrent requests are bounded"),
    Rule("traffic.upstream_timeout", ("API4:2023",), lambda f: f.traffic is not None,
         "a slow upstream cannot hold connections forever"),
    Rule("traffic.ip", ("API8:2023",), lambda f: f.traffic is not None and (
        not _OPEN_NETWORKS.issuperset(map(str, f.traffic.ip.allow)) or bool(f.traffic.ip.deny)),
        "only the listed networks may call"),
    Rule("input.contract", ("API3:2023", "API8:2023"), lambda f: f.need.contract and _operation(f),
         "requests are validated against the route's OpenAPI operation"),
    Rule("input.undeclared", ("API3:2023",), lambda f: f.need.undeclared_reject and _operation(f),
         "properties the OpenAPI operation does not declare are refused (mass assignment)"),
    Rule("input.inspection", ("API8:2023",), lambda f: f.need.inspection_block,
         "injection patterns in requests are blocked"),
    Rule("input.inspection_categories", ("API7:2023",),
         lambda f: f.need.inspection_block and "ssrf" in (getattr(f.inputs, "inspection_categories", None) or ()),
         "URLs aimed at internal addresses are blocked (ssrf)"),
    Rule("input.max_json_depth", ("API4:2023",), lambda f: f.inputs is not None,
         "JSON depth, sizes and form fields are bounded"),
    Rule("gateway.default_deny", ("API9:2023",), lambda f: True,
         "undeclared paths and methods are refused on every API"),
)


def facts(route: CompiledRoute, plan: Plan) -> Facts:
    """The facts of `plan` (the one in force at the report's instant) on `route`."""
    return Facts(demands(route, plan), route, plan, section(plan, "authz"), section(plan, "traffic"),
                 section(plan, "input"))


def credit(route: CompiledRoute, plan: Plan) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Categories answered on the route (each with the controls that answer it) and why each control counts."""
    f = facts(route, plan)
    out: dict[str, list[str]] = {}
    why: dict[str, str] = {}
    for rule in RULES:
        if rule.holds(f):
            why[rule.control] = rule.why
            for category in rule.categories:
                out.setdefault(category, []).append(rule.control)
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][3:].split(":")[0]))), why


def label(category: str) -> str:
    return f"{category} {CATEGORIES.get(category, '')}".strip()
