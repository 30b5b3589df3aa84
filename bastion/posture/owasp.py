"""Which OWASP API Security Top 10 (2023) risks each Bastion control answers: a static, reviewed table.

A control "answers" a category when switching it on removes or bounds the attack the category describes at the
gateway. API10 (unsafe consumption of third-party APIs) is a property of the upstream's own code: no gateway
control answers it, and the report says so rather than claiming it.
"""

from __future__ import annotations

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

# control id (or section) -> categories; the most specific entry wins
CONTROLS: dict[str, tuple[str, ...]] = {
    "transport.tls": ("API2:2023", "API8:2023"),
    "transport.mtls": ("API2:2023",),
    "traffic.ip": ("API8:2023",),
    "identity.required": ("API2:2023",),
    "identity.methods": ("API2:2023",),
    "identity.require_consumer": ("API2:2023", "API9:2023"),
    "identity.allow_query_token": ("API2:2023", "API8:2023"),
    "identity.allow_query_api_key": ("API2:2023", "API8:2023"),
    "identity.forward_credential": ("API8:2023",),
    "identity.require_bound_tokens": ("API2:2023",),
    "identity": ("API2:2023",),
    "authz.owner": ("API1:2023",),
    "authz.owners": ("API1:2023",),
    "authz.scopes": ("API5:2023",),
    "authz.roles": ("API5:2023",),
    "authz.conditions": ("API1:2023", "API5:2023"),
    "authz": ("API5:2023",),
    "traffic.rate_limits": ("API4:2023",),  # API6 is credited only where a business flow applies (flows)
    "traffic.quotas": ("API4:2023",),
    "flows": ("API6:2023",),
    "transport.revocation": ("API2:2023",),
    "transport.min_tls": ("API8:2023",),
    "traffic.max_body_bytes": ("API4:2023",),
    "traffic.max_concurrent": ("API4:2023",),
    "traffic.upstream_timeout": ("API4:2023",),
    "traffic.upstream_connect_timeout": ("API4:2023",),
    "traffic": ("API4:2023",),
    "input.contract": ("API3:2023", "API8:2023"),
    "input.undeclared": ("API3:2023",),
    "input.inspection": ("API7:2023", "API8:2023"),
    "input.inspection_categories": ("API7:2023",),
    "input": ("API4:2023",),  # the JSON size and depth limits
    "gateway.default_deny": ("API9:2023",),
}


def categories(control: str) -> tuple[str, ...]:
    """The categories a control id answers (its own entry, else its section's)."""
    if control in CONTROLS:
        return CONTROLS[control]
    return CONTROLS.get(control.split(".", 1)[0], ())


def label(category: str) -> str:
    return f"{category} {CATEGORIES.get(category, '')}".strip()
