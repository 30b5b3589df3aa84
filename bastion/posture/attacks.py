"""The attacks a route's effective policy must refuse, as plain request descriptions.

Planning is pure: from a compiled route (and the tokens the probe can make) to a list of `Attack`s, each with
the status the gateway must answer. The runner (`probe.py`) sends them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bastion.compile import CompiledRoute
from bastion.posture.bola import OwnerPlan, owner_plan
from bastion.posture.controls import Demands, demands
from bastion.posture.tokens import TokenForge

PROBE_USER_AGENT = "bastion-probe"
SQLI = "1' UNION SELECT password FROM users--"
UNDECLARED_FIELD = "bastion_probe_undeclared"
_METHOD_PREFERENCE = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass(frozen=True, slots=True)
class Attack:
    """One hostile request and the answer the policy promises."""

    route: str  # api/route
    name: str  # stable id: no_credential, alg_none, ...
    control: str  # the control it proves: identity.required, transport.tls, ...
    method: str
    path: str
    expected: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    plaintext: bool = False  # send to the plaintext target
    repeat: int = 1  # burst: send this many, expect `expected` at least once
    skip: str = ""  # why it cannot be sent (reported, never a pass)
    host: str | None = None
    refusal: bool = True  # False: a control request that identity and authorisation must accept


@dataclass(slots=True)
class ProbeOptions:
    target_tls: bool = False  # the main target is https
    plaintext_available: bool = True  # a plaintext target exists (the main one, or --plain-target)
    client_cert: bool = False  # the probe presents a client certificate
    include_rate_limit: bool = False
    max_burst: int = 1000
    extra: dict[str, Any] = field(default_factory=dict)


def concrete_path(template: str, route: CompiledRoute, values: dict[str, str] | None = None) -> str:
    """`/orders/{id}` -> `/orders/1`: path parameters get a harmless value (numeric when the schema says so),
    or the one `values` names (the probe's own object on owner-protected routes)."""
    out = []
    for segment in template.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            name = segment[1:-1]
            value = (values or {}).get(name)
            out.append(quote(_param_value(route, name) if value is None else value, safe=""))
        else:
            out.append(segment)
    return "/".join(out) or "/"


def _param_value(route: CompiledRoute, name: str, where: str = "path") -> str:
    for param in (route.info.operation or {}).get("parameters") or []:
        if isinstance(param, dict) and param.get("name") == name and param.get("in") == where:
            return str(sample(param.get("schema") or {}))
    return "1"


def with_query(path: str, query: str) -> str:
    if not query:
        return path
    return f"{path}{'&' if '?' in path else '?'}{query}"


def sample(schema: Any, depth: int = 0) -> Any:
    """A small value that satisfies a JSON schema's type, enum and required properties."""
    if not isinstance(schema, dict) or depth > 8:
        return "probe"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if "example" in schema:
        return schema["example"]
    for combinator in ("oneOf", "anyOf", "allOf"):
        if schema.get(combinator):
            return sample(schema[combinator][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: sample(props.get(name, {}), depth + 1) for name in schema.get("required") or []}
    if kind == "array":
        return [sample(schema.get("items") or {}, depth + 1)] if schema.get("minItems") else []
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return max(float(schema.get("minimum", 1)), 1.0)
    if kind == "boolean":
        return True
    if schema.get("format") == "uuid":
        return "00000000-0000-4000-8000-000000000001"
    return "probe"


def _json_body_schema(operation: dict[str, Any] | None) -> dict[str, Any] | None:
    content = ((operation or {}).get("requestBody") or {}).get("content") or {}
    for media, item in content.items():
        if "json" in media.split(";")[0]:
            return (item or {}).get("schema") or {}
    return None


def _string_property(schema: dict[str, Any] | None) -> str | None:
    props = (schema or {}).get("properties") or {}
    for name, prop in props.items():
        if isinstance(prop, dict) and prop.get("type") == "string" and "enum" not in prop and "format" not in prop:
            return str(name)
    return None


def _string_query_param(operation: dict[str, Any] | None, owned: set[str] | frozenset[str] = frozenset()
                        ) -> str | None:
    for param in (operation or {}).get("parameters") or []:
        if isinstance(param, dict) and param.get("in") == "query" and param.get("name") not in owned:
            schema = param.get("schema") or {}
            if schema.get("type", "string") == "string" and "enum" not in schema and "format" not in schema:
                return str(param.get("name"))
    return None


def pick_method(methods: frozenset[str], *, body: bool = False) -> str:
    order = _BODY_METHODS + _METHOD_PREFERENCE if body else _METHOD_PREFERENCE
    return next((m for m in order if m in methods), sorted(methods)[0])


def plan_route(route: CompiledRoute, plan_index: int, forge: TokenForge | None, options: ProbeOptions,
               host: str | None = None) -> list[Attack]:
    """Every attack this route's effective policy must refuse, in pipeline order."""
    plan = route.plans[plan_index]
    need = demands(route, plan)
    info = route.info
    owner = owner_plan(route, plan, forge.subject if forge is not None else "",
                       lambda where, name: _param_value(route, name, where))
    # on owner-protected routes every request names the probe's own object A, so only the control under test
    # refuses it; the BOLA attack swaps in object B
    path = with_query(concrete_path(info.path, route, owner.path_values()), owner.query())
    method = pick_method(info.methods)
    attacks: list[Attack] = []

    def add(name: str, control: str, expected: int, *, meth: str = method, target: str = path,
            headers: tuple[tuple[str, str], ...] = (), body: bytes = b"", skip: str = "", plaintext: bool = False,
            repeat: int = 1) -> None:
        attacks.append(Attack(info.route_id, name, control, meth, target, expected,
                              (("User-Agent", PROBE_USER_AGENT), *headers), body, plaintext, repeat, skip, host))

    if need.tls:
        skip = "" if options.plaintext_available else "needs a plaintext listener: give --plain-target"
        add("plaintext", "transport.tls", 403, plaintext=True, skip=skip)
        if not options.target_tls:  # every other attack would be refused by transport first, proving nothing
            add("other_attacks", "transport.tls", 0, skip="the route requires TLS: give an https --target")
            return attacks
    if need.mtls:
        add("no_client_certificate", "transport.mtls", 403,
            skip="" if not options.client_cert else "the probe presents a client certificate (--client-cert)")
        if not options.client_cert:
            add("other_attacks", "transport.mtls", 0, skip="the route requires mTLS: give --client-cert/--key")
            return attacks

    valid = _valid_headers(need, forge, owner)
    if valid and method in ("GET", "HEAD"):  # a safe request proves the probe identity itself is accepted
        attacks.append(Attack(info.route_id, "valid_probe_token", "authz.owner (own object)" if owner.bindings
                              else "probe identity", method, path, 0, (("User-Agent", PROBE_USER_AGENT), *valid),
                              host=host, refusal=False))
    elif valid and owner.bindings:
        add("valid_probe_token", "authz.owner (own object)", 0,
            skip="the probe sends its own valid request only with GET/HEAD, so the BOLA refusal below is not "
                 "proven to come from the owner rule")
    if need.identity_required:
        add("no_credential", "identity.required", 401)
    if need.identity and need.jwt:
        if forge is None:
            add("forged_tokens", "identity.methods", 401, skip="no JWT provider in the config")
        else:
            scopes = need.scopes
            forgeries: list[tuple[str, Callable[..., str], bool]] = [
                ("alg_none", forge.alg_none, False), ("foreign_key", forge.foreign_key, False),
                ("hs256_public_key", forge.hs256_public_key, False), ("expired", forge.expired, True),
                ("not_yet_valid", forge.not_yet_valid, True), ("wrong_issuer", forge.wrong_issuer, True),
                ("wrong_audience", forge.wrong_audience, True),
            ]
            for name, make, needs_key in forgeries:
                if needs_key and not forge.trusted:
                    add(name, "identity.methods", 401, skip="needs a probe identity (--probe-key/--probe-provider)")
                    continue
                add(name, "identity.methods", 401, headers=(("Authorization", f"Bearer {make(scopes)}"),))
    if need.scopes:
        if forge is not None and forge.trusted and need.jwt:
            add("missing_scope", "authz.scopes", 403,
                headers=(("Authorization", f"Bearer {forge.valid(())}"),))
        else:
            add("missing_scope", "authz.scopes", 403, skip="needs a probe identity with a JWT provider")
    if owner.active:
        _bola_attacks(add, info.path, route, owner, need, forge, valid)

    skip_valid = "" if valid is not None else "needs a credential the gateway accepts (probe identity)"
    auth = valid or ()
    body_method = pick_method(info.methods, body=True)
    # 413 comes before every stage (the Content-Length is checked first), so no credential is needed. The body
    # is a valid document padded with JSON whitespace: if the limit is missing, nothing else refuses it.
    add("oversized_body", "traffic.max_body_bytes", 413, meth=body_method,
        headers=(*auth, ("Content-Type", "application/json")),
        body=_padded(_json_body_schema(info.operation), need.max_body_bytes + 1))
    _input_attacks(add, route, need, auth, skip_valid, body_method, path, owner)

    if need.rate_limits and options.include_rate_limit:
        count = min((int(limit.capacity // max(limit.cost, 1)) + 1 for limit in need.rate_limits), default=0)
        skip = skip_valid or ("" if count <= options.max_burst else f"burst of {count} > --max-burst")
        add("rate_limit_burst", "traffic.rate_limits", 429, headers=auth, repeat=count, skip=skip)
    return attacks


def _padded(schema: dict[str, Any] | None, size: int) -> bytes:
    doc = sample(schema) if schema is not None else {}
    head = json.dumps(doc if isinstance(doc, dict | list) else {}).encode()
    return head[:-1] + b" " * max(size - len(head), 0) + head[-1:]


def _valid_headers(need: Demands, forge: TokenForge | None,
                   owner: OwnerPlan) -> tuple[tuple[str, str], ...] | None:
    """Headers of a request that passes identity and authorisation, or None when the probe cannot make one."""
    if not need.identity or (not need.identity_required and not need.scopes and not owner.active):
        return ()
    if forge is None or not forge.trusted or not need.jwt or owner.skip:
        return None
    return (("Authorization", f"Bearer {forge.valid(need.scopes, **owner.claims())}"), *owner.headers())


def _bola_attacks(add: Callable[..., None], template: str, route: CompiledRoute, owner: OwnerPlan, need: Demands,
                  forge: TokenForge | None, valid: tuple[tuple[str, str], ...] | None) -> None:
    """One request per owner rule: the probe's token (naming object A) asks for object B of that rule."""
    if owner.skip and not owner.bindings:
        add("bola", "authz.owner", 403, skip=owner.skip)
        return
    for binding in owner.bindings:
        name = f"bola:{binding.source}"
        if valid is None or forge is None:
            add(name, "authz.owner", 403, skip=owner.skip or "needs a probe identity with a JWT provider "
                "(--probe-key/--probe-provider)")
            continue
        target = with_query(concrete_path(template, route, owner.path_values(binding)), owner.query(binding))
        token = forge.valid(need.scopes, **owner.claims())
        add(name, "authz.owner", 403, target=target,
            headers=(("Authorization", f"Bearer {token}"), *owner.headers(binding)))


def _input_attacks(add: Callable[..., None], route: CompiledRoute, need: Demands,
                   auth: tuple[tuple[str, str], ...], skip_valid: str, body_method: str, path: str,
                   owner: OwnerPlan) -> None:
    operation = route.info.operation
    schema = _json_body_schema(operation)
    has_body = schema is not None and body_method in _BODY_METHODS
    if need.contract and has_body:
        good = sample(schema)
        add("wrong_content_type", "input.contract", 415, meth=body_method,
            headers=(*auth, ("Content-Type", "text/plain")), body=b"probe", skip=skip_valid)
        if need.undeclared_reject and isinstance(good, dict):
            body = json.dumps({**good, UNDECLARED_FIELD: "probe"}).encode()
            add("undeclared_body_field", "input.undeclared", 400, meth=body_method,
                headers=(*auth, ("Content-Type", "application/json")), body=body, skip=skip_valid)
    if need.inspection_block:
        field_name = _string_property(schema) if has_body else None
        if field_name is not None:
            good = sample(schema)
            body = json.dumps({**(good if isinstance(good, dict) else {}), field_name: SQLI}).encode()
            add("injection_body", "input.inspection", 400, meth=body_method,
                headers=(*auth, ("Content-Type", "application/json")), body=body, skip=skip_valid)
            return
        owned = {b.name for b in owner.bindings if b.kind == "query"}
        param = _string_query_param(operation, owned)
        if param is not None:
            add("injection_query", "input.inspection", 400,
                target=with_query(path, f"{quote(param)}={quote(SQLI, safe='')}"), headers=auth, skip=skip_valid)
        else:  # User-Agent is inspected on every route (input.inspected_headers)
            add("injection_header", "input.inspection", 400,
                headers=(*auth, ("Referer", f"https://example.com/?q={SQLI}")), skip=skip_valid)
