"""What the benchmark measures: one table of scenarios, and the Bastion config generated from it.

A scenario is one request shape (method, path, wrk script, headers) plus what Bastion needs to serve it (a
route entry, optionally a config fragment: classes, providers, gateway settings). Every scenario runs against
Bastion, and against the baselines it lists (nginx as a plain reverse proxy, the same with nginx's default
keepalive_requests, the upstream directly) on the same path, in the same round. Adding a control to the benchmark = appending one `Scenario` to `SCENARIOS`:

    Scenario(
        name="jwt-es256-cached", section="identity", path="/jwt/get",
        headers=("Authorization: Bearer <token>",),
        route={"policy": {"identity": {"required": True, "methods": ["jwt"]}}},
        fragment={"providers": {"jwt": [...]}},
        baselines=("nginx",),
    )

Scenarios that need material made at run time (keys, tokens, a JWKS file) set `prepare`: it receives the run's
temp dir and returns the headers, config fragment and wrk script to use.

A scenario that needs a gateway-wide setting (`gateway.state`, `gateway.audit`, an h2c listener) names a
`GatewayVariant` in `gateway`: its scenarios are served by a separate Bastion process with its own config and
ports, started before them and stopped after them in every round. Scenarios after the core ones show, besides
their own figures, the ratio to the nginx plain proxy and to Bastion's own plain route (`plain`) measured in
the same rounds, which tells what the control costs.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from bench import tokens

BENCH_DIR = Path(__file__).resolve().parent
POST_SCRIPT = BENCH_DIR / "post_1k.lua"
PAYLOAD_1K = BENCH_DIR / "payload_1k.json"

LISTEN_PORT = 18080
ADMIN_PORT = 19901
UPSTREAM_PORT = 18081
NGINX_PORT = 18082
NGINX_DEFAULTS_PORT = 18083
NGINX_H2C_PORT = 18084
GRPC_UPSTREAM_PORT = 18085
PYTHON_FLOOR_PORT = 18086
ENVOY_PORTS = {"envoy": 18093, "envoy-jwt": 18094, "envoy-jwt-nocache": 18095, "envoy-full": 18096}
ENVOY_ADMIN_PORT = 19990
REDIS_PORT = 18379

TARGETS = ("direct-upstream", "nginx", "nginx-defaults", "nginx-h2c", "grpc-direct", "python-floor",
           *ENVOY_PORTS, "bastion")
TOOLS = ("wrk", "h2load", "grpc")

JWT_ISSUER = "https://idp.bench.invalid"
JWT_AUDIENCE = "api://bench"
UNCACHED_TOKENS = 160_000  # four wrk runs' worth (tokens.RUN_STRIDE): no token comes back within 10,000 others


@dataclass(frozen=True, slots=True)
class GatewayVariant:
    """A gateway-wide setting that needs its own Bastion process (own config, listener and admin port)."""

    name: str
    port: int
    admin_port: int
    settings: dict[str, Any] = field(default_factory=dict)  # merged into `gateway:`; "{tmp}" = the run's temp dir
    listener: dict[str, Any] = field(default_factory=dict)  # extra fields of its listener, e.g. {"h2c": True}
    redis: bool = False  # start a redis-server (pinned to the load CPU) around this process
    description: str = ""


VARIANTS: dict[str, GatewayVariant] = {
    v.name: v for v in (
        GatewayVariant("redis", 18090, 19910, {"state": f"redis://127.0.0.1:{REDIS_PORT}/0"}, redis=True,
                       description=f"`gateway.state: redis://127.0.0.1:{REDIS_PORT}/0` (a redis-server "
                                   "started by the bench, pinned to the load CPU)"),
        GatewayVariant("audit", 18091, 19911,
                       {"audit": {"sinks": [{"name": "bench", "type": "file", "path": "{tmp}/audit/audit.jsonl",
                                             "max_bytes": "256MiB", "backups": 2}],
                                  "spool_dir": "{tmp}/audit-spool"}},
                       description="`gateway.audit.sinks: [{type: file}]`: one JSON line per request to a file "
                                   "in the run's temp dir"),
        GatewayVariant("h2c", 18092, 19912, listener={"h2c": True},
                       description="a listener with `h2c: true` (cleartext HTTP/2 with prior knowledge)"),
    )
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a scenario's `prepare` hook made: extra request headers and a config fragment."""

    headers: tuple[str, ...] = ()
    fragment: dict[str, Any] = field(default_factory=dict)
    script: Path | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """One measured request shape, and the Bastion route that serves it."""

    name: str
    section: str
    path: str
    method: str = "GET"
    script: Path | None = None
    body_file: Path | None = None
    headers: tuple[str, ...] = ()
    route: dict[str, Any] = field(default_factory=dict)
    fragment: dict[str, Any] = field(default_factory=dict)
    baselines: tuple[str, ...] = ("direct-upstream", "nginx", "nginx-defaults")
    # checked against the issue's target: >= 60% of nginx's req/s and p99 within 2x of nginx's
    gated: bool = False
    prepare: Callable[[Path], Prepared] | None = None
    route_path: str | None = None  # the route's pattern when `path` fills in a parameter (/a/{id} vs /a/42)
    api: dict[str, Any] | None = None  # an API of its own (name, class, openapi, grpc...); default: `bench`
    gateway: str = ""  # a name in VARIANTS: served by that variant's own Bastion process
    plain: str = ""  # the core scenario whose nginx and Bastion rows this one is compared with
    tool: str = "wrk"  # wrk | h2load | grpc
    # the Envoy target doing the same work: the CPU ratio Bastion ÷ it is the headline, with the issue's target
    peer: str = ""
    peer_target: float = 0.0  # the most Bastion may cost, as a multiple of the peer's CPU µs per request
    # before measuring, Bastion and each chain target must refuse a bad token (401) and a missing scope (403)
    enforces: bool = False

    @property
    def targets(self) -> tuple[str, ...]:
        return (*(t for t in TARGETS if t in self.baselines), "bastion")

    @property
    def variant(self) -> GatewayVariant | None:
        return VARIANTS[self.gateway] if self.gateway else None

    @property
    def body(self) -> bytes | None:
        return self.body_file.read_bytes() if self.body_file else None


def _jwt_cached(tmp: Path) -> Prepared:
    token = tokens.mint(tmp, JWT_ISSUER, JWT_AUDIENCE)[0]
    return Prepared(headers=(f"Authorization: Bearer {token}",))


def _jwt_uncached(tmp: Path) -> Prepared:
    listed = tmp / "jwt-uncached.txt"  # minted once per run: every uncached scenario cycles through the same set
    minted = (listed.read_text().split() if listed.exists()
              else tokens.mint(tmp, JWT_ISSUER, JWT_AUDIENCE, UNCACHED_TOKENS))
    # the preflight sends the first; the script then cycles through all of them
    return Prepared(headers=(f"Authorization: Bearer {minted[0]}",),
                    script=tokens.cycling_script(tmp, minted, "jwt-uncached"))


# The JWT provider (a local JWKS file written at run time; "{tmp}" is replaced by the run's temp dir) and the
# class its routes use: identity required, JWT only, the input controls off as on the plain path.
JWT_PROVIDER: dict[str, Any] = {
    "name": "bench", "issuer": JWT_ISSUER, "audiences": [JWT_AUDIENCE], "algorithms": ["ES256"],
    "jwks_file": "{tmp}/jwks.json",
}
AUTHN_CLASS: dict[str, Any] = {
    "identity": {"required": True, "methods": ["jwt"]},
    "input": {"contract": "off", "inspection": "off"},
    "response": {"undeclared": "allow", "rewrite_errors": False,
                 "security_headers": {"nosniff": False, "no_store_authenticated": False, "frame_options": "off",
                                      "referrer_policy": "off", "hsts_max_age": 0}},
}
JWT_API: dict[str, Any] = {"name": "bench-jwt", "class": "authn"}
JWT_FRAGMENT: dict[str, Any] = {"providers": {"jwt": [JWT_PROVIDER]}, "classes": {"authn": AUTHN_CLASS}}
OPENAPI = BENCH_DIR / "bench-openapi.yaml"
CONTRACT_API: dict[str, Any] = {"name": "bench-contract", "class": "open", "openapi": str(OPENAPI)}
GRPC_METHOD = "/bench.Echo/Call"
GRPC_API: dict[str, Any] = {"name": "bench-grpc", "class": "open", "upstream": f"http://127.0.0.1:{GRPC_UPSTREAM_PORT}",
                            "grpc": {"methods": [GRPC_METHOD]}}
# far above any rate this machine reaches: the limiter is consulted and charged on every request, never denies
NEVER_DENY = {"name": "bench", "algorithm": "sliding_window", "limit": 1_000_000_000, "window": "1s",
              "key": "client_ip"}
# issue 17's identity chain: the JWT of the `authn` class, one scope, and a rate limit that never denies
CHAIN_ROUTE: dict[str, Any] = {"policy": {"authz": {"scopes": ["bench:read"]},
                                          "traffic": {"rate_limits": [NEVER_DENY]}}}
FULL_API: dict[str, Any] = {"name": "bench-full", "class": "authn", "openapi": str(OPENAPI)}
CORE_BASELINES = ("direct-upstream", "nginx", "nginx-defaults", "python-floor", "envoy")
_POST = {"method": "POST", "script": POST_SCRIPT, "body_file": PAYLOAD_1K}

SCENARIOS: tuple[Scenario, ...] = (
    # with the python-floor proxy (bench/python_floor.py): what the language and event loop alone cost here
    Scenario(name="get", section="core", path="/get", gated=True, baselines=CORE_BASELINES, peer="envoy",
             peer_target=1.0),
    Scenario(name="post-1k", section="core", path="/post", gated=True, baselines=CORE_BASELINES, peer="envoy",
             peer_target=1.0, **_POST),
    # the same POST on a route that keeps the input section's secure default (injection inspection of every
    # JSON string, `block`): what a route of a class that does not opt out pays
    Scenario(name="post-1k-inspected", section="defaults", path="/post-inspected",
             route={"policy": {"input": {"inspection": "block"}}}, baselines=(), plain="post-1k", **_POST),
    # the same POST with the OWASP CRS (Debian's modsecurity-crs, paranoia 1) on Bastion's engine besides the
    # default inspection (issue 14): the cost of `crs: {enabled: true}` on a route without a contract
    Scenario(name="post-1k-crs", section="defaults", path="/post-crs",
             route={"policy": {"input": {"inspection": "block", "crs": {"enabled": True, "paranoia": 1}}}},
             baselines=(), plain="post-1k", **_POST),
    # issue 3: one token over and over (verified-token cache hit) and a different token on every request
    Scenario(name="jwt-es256-cached", section="identity", path="/jwt/get", api=JWT_API, fragment=JWT_FRAGMENT,
             prepare=_jwt_cached, baselines=(), plain="get"),
    Scenario(name="jwt-es256-uncached", section="identity", path="/jwt/get-uncached", api=JWT_API,
             fragment=JWT_FRAGMENT, prepare=_jwt_uncached, baselines=(), plain="get"),
    # issue 4: scopes, a role and an owner rule (the path id must equal the token's `sub`), on top of the JWT
    Scenario(name="authz-scope-role-owner", section="authz", path="/authz/acct-42",
             route_path="/authz/{account_id}", api=JWT_API, fragment=JWT_FRAGMENT, prepare=_jwt_cached,
             route={"policy": {"authz": {"scopes": ["bench:read"], "roles": {"any_of": ["clerk"]},
                                         "owner": [{"from": "path.account_id", "equals": "claim:sub"}]}}},
             baselines=(), plain="get"),
    # issue 5: one sliding-window limit keyed by client IP, in process memory and in Redis
    Scenario(name="ratelimit-memory", section="traffic", path="/limited",
             route={"policy": {"traffic": {"rate_limits": [NEVER_DENY]}}}, baselines=(), plain="get"),
    Scenario(name="ratelimit-redis", section="traffic", path="/limited", gateway="redis",
             route={"policy": {"traffic": {"rate_limits": [NEVER_DENY]}}}, baselines=(), plain="get"),
    # issue 6: the 1 KB POST validated against its OpenAPI operation, without and with injection inspection
    Scenario(name="contract-1k", section="input", path="/contract/post", api=CONTRACT_API,
             route={"operation": "postOrder", "policy": {"input": {"contract": "enforce"}}},
             baselines=(), plain="post-1k", **_POST),
    Scenario(name="contract-1k-inspected", section="input", path="/contract/post-inspected", api=CONTRACT_API,
             route={"operation": "postOrderInspected",
                    "policy": {"input": {"contract": "enforce", "inspection": "block"}}},
             baselines=(), plain="post-1k", **_POST),
    # issue 7: the plain GET with every request written as an audit event to a file
    Scenario(name="audit-file", section="audit", path="/get", gateway="audit", baselines=(), plain="get"),
    # issue 17: the identity chain Envoy offers (JWT + scope + rate limit) side by side with Envoy's, cached
    # and uncached; then the full chain (+ OpenAPI contract, injection inspection, an audit event per request)
    # beside Envoy's identity chain with a JSON access log line per request
    Scenario(name="chain-jwt-cached", section="peer", path="/chain/get", api=JWT_API, fragment=JWT_FRAGMENT,
             prepare=_jwt_cached, route=CHAIN_ROUTE, baselines=("envoy-jwt", "envoy-jwt-nocache"), plain="get",
             peer="envoy-jwt", peer_target=1.0, enforces=True),
    Scenario(name="chain-jwt-uncached", section="peer", path="/chain/get-uncached", api=JWT_API,
             fragment=JWT_FRAGMENT, prepare=_jwt_uncached, route=CHAIN_ROUTE,
             baselines=("envoy-jwt", "envoy-jwt-nocache"), plain="get", peer="envoy-jwt", peer_target=1.2,
             enforces=True),
    Scenario(name="chain-jwt-post-1k", section="peer", path="/chain/post", api=JWT_API, fragment=JWT_FRAGMENT,
             prepare=_jwt_cached, route=CHAIN_ROUTE, baselines=("envoy-jwt",), plain="post-1k", peer="envoy-jwt",
             peer_target=1.0, enforces=True, **_POST),
    Scenario(name="full-chain-post-1k", section="peer", path="/full/post", api=FULL_API, fragment=JWT_FRAGMENT,
             prepare=_jwt_cached, gateway="audit", baselines=("envoy-full",), plain="post-1k", peer="envoy-full",
             peer_target=2.0, enforces=True,
             route={"operation": "postOrderFull", "policy": {
                 **CHAIN_ROUTE["policy"], "input": {"contract": "enforce", "inspection": "block"}}}, **_POST),
    # issue 9: HTTP/2 (h2c, prior knowledge) through Bastion and through nginx; gRPC unary through Bastion and
    # straight to the grpcio server
    Scenario(name="h2c-get", section="http2", path="/get", gateway="h2c", tool="h2load",
             baselines=("nginx-h2c",)),
    Scenario(name="grpc-unary", section="http2", path=GRPC_METHOD, method="POST", gateway="h2c", tool="grpc",
             api=GRPC_API, baselines=("grpc-direct",)),
)

SECTION_TITLES = {
    "core": "Core: plain proxy path (every control off)",
    "defaults": "Secure defaults: 1 KB JSON POST with the default input inspection (`inspection: block`), and "
                "with the OWASP CRS besides it",
    "identity": "Identity (issue 3): JWT ES256, verified-token cache hit and miss",
    "authz": "Authorisation (issue 4): scopes, a role and an owner rule",
    "traffic": "Traffic (issue 5): a rate limit that never denies, in memory and in Redis",
    "input": "Input (issue 6): 1 KB JSON POST validated against its OpenAPI operation",
    "audit": "Audit (issue 7): plain GET with every request audited to a file",
    "peer": "Envoy as the peer (issue 17): the same identity chain, cached and uncached tokens, and the full chain",
    "http2": "HTTP/2 and gRPC (issue 9): h2c through Bastion and nginx, gRPC unary through Bastion and direct",
}

# The `open` class turns off every control that has an off switch: no identity stage at all (not required, no
# method: with `methods: []` the identity stage is not even built), no authorisation requirement, no rate
# limit, and the input contract and inspection off (both on by default), so that no stage buffers or parses
# the body. What remains is the proxy path itself.
OPEN_CLASS: dict[str, Any] = {
    "identity": {"required": False, "methods": []},
    "input": {"contract": "off", "inspection": "off"},
    "response": {"undeclared": "allow", "rewrite_errors": False,
                 "security_headers": {"nosniff": False, "no_store_authenticated": False, "frame_options": "off",
                                      "referrer_policy": "off", "hsts_max_age": 0}},
}

BASE_CONFIG: dict[str, Any] = {
    "version": 1,
    "gateway": {
        "listeners": [{"address": "127.0.0.1", "port": LISTEN_PORT}],
        "admin": {"address": "127.0.0.1", "port": ADMIN_PORT},
    },
    "classes": {"open": OPEN_CLASS},
    "apis": [
        {
            "name": "bench",
            "owner": "perf@example.com",
            "class": "open",
            "upstream": f"http://127.0.0.1:{UPSTREAM_PORT}",
            "routes": [],
        }
    ],
}


def merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `into`: mappings merge, lists append (items not already there),
    scalars replace."""
    out = copy.deepcopy(into)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + [copy.deepcopy(v) for v in value if v not in out[key]]
        else:
            out[key] = copy.deepcopy(value)
    return out


def route_entry(scenario: Scenario) -> dict[str, Any] | None:
    """The route that serves a scenario (None when its API declares it: a gRPC method)."""
    if "operation" in scenario.route:
        return dict(scenario.route)
    if scenario.api and "grpc" in scenario.api:
        return None
    return {"name": scenario.name, "path": scenario.route_path or scenario.path, "methods": [scenario.method],
            **scenario.route}


def substitute(value: Any, tmp: Path | None) -> Any:
    """Replace "{tmp}" in every string of a config with the run's temp dir."""
    if isinstance(value, dict):
        return {k: substitute(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, tmp) for v in value]
    if isinstance(value, str) and "{tmp}" in value:
        return value.replace("{tmp}", str(tmp or "/tmp"))
    return value


def bastion_config(
    scenarios: Iterable[Scenario], prepared: dict[str, Prepared] | None = None,
    variant: GatewayVariant | None = None, tmp: Path | None = None,
) -> dict[str, Any]:
    """The `bastion.yaml` (as data) that serves every scenario given, with their fragments merged in.

    With a variant: its own listener and admin ports, and its gateway-wide settings.
    """
    prepared = prepared or {}
    config = copy.deepcopy(BASE_CONFIG)
    if variant:
        config["gateway"]["listeners"] = [{"address": "127.0.0.1", "port": variant.port, **variant.listener}]
        config["gateway"]["admin"]["port"] = variant.admin_port
        config = merge(config, {"gateway": variant.settings})
    seen: dict[tuple[str, str], str] = {}
    for scenario in scenarios:
        key = (scenario.method, scenario.path)
        if key in seen:
            raise ValueError(f"scenarios {seen[key]!r} and {scenario.name!r} both use {key[0]} {key[1]}")
        seen[key] = scenario.name
        api = _api(config, scenario)
        entry = route_entry(scenario)
        if entry is not None:
            api["routes"].append(entry)
        config = merge(config, scenario.fragment)
        if scenario.name in prepared:
            config = merge(config, prepared[scenario.name].fragment)
    return substitute(config, tmp)


def _api(config: dict[str, Any], scenario: Scenario) -> dict[str, Any]:
    """The API a scenario's route belongs to, added to the config on first use."""
    name = scenario.api["name"] if scenario.api else "bench"
    for api in config["apis"]:
        if api["name"] == name:
            return api
    base = config["apis"][0]
    api = {"name": name, "owner": base["owner"], "class": base["class"], "upstream": base["upstream"],
           **copy.deepcopy(scenario.api or {}), "routes": []}
    config["apis"].append(api)
    return api


def groups(chosen: Iterable[Scenario]) -> dict[str, list[Scenario]]:
    """Scenarios by the Bastion process that serves them: "" (the main one) first, then each variant."""
    out: dict[str, list[Scenario]] = {"": []}
    for scenario in chosen:
        out.setdefault(scenario.gateway, []).append(scenario)
    return out


_PLAIN = re.compile(r"^[A-Za-z0-9_./@*-][A-Za-z0-9_./@* -]*$")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    plain = _PLAIN.match(text) and text.lower() not in _RESERVED and not re.match(r"^[-+.]?[0-9]", text)
    return text if plain and not text.endswith(" ") else json.dumps(text)


def _flow(value: Any) -> str | None:
    """A one-line form for mappings and lists of scalars (`{address: 127.0.0.1, port: 18080}`)."""
    if isinstance(value, dict):
        if any(isinstance(v, dict | list) for v in value.values()):
            return None
        return "{" + ", ".join(f"{_scalar(k)}: {_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        if any(isinstance(v, dict | list) for v in value):
            return None
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _scalar(value)


def _block(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            flow = _flow(item)
            if flow is not None and len(flow) + indent < 100:
                lines.append(f"{pad}{_scalar(key)}: {flow}")
            else:
                lines.append(f"{pad}{_scalar(key)}:")
                lines += _block(item, indent + 2)
    else:
        for item in value:
            flow = _flow(item)
            if flow is not None and len(flow) + indent < 100:
                lines.append(f"{pad}- {flow}")
            else:
                nested = _block(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines += nested[1:]
    return lines


def dump(config: dict[str, Any]) -> str:
    """YAML text for a config of mappings, lists and scalars (the bench runner needs no YAML library)."""
    return "\n".join(_block(config, 0)) + "\n"


def select(patterns: Iterable[str] | None) -> tuple[Scenario, ...]:
    """Scenarios whose name or section matches one of the shell-style patterns (all when none given)."""
    pats = [p.strip() for p in (patterns or []) if p.strip()]
    if not pats:
        return SCENARIOS
    chosen = tuple(s for s in SCENARIOS if any(fnmatchcase(s.name, p) or fnmatchcase(s.section, p) for p in pats))
    if not chosen:
        known = ", ".join(s.name for s in SCENARIOS)
        raise ValueError(f"--only {','.join(pats)} matches no scenario (known: {known})")
    return chosen
