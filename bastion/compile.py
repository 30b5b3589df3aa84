"""Config + OpenAPI -> frozen per-route policy objects, built once per (re)load.

For every route this computes the effective policy (class baseline tightened by API and route, loosened only
by an exception in force) and a schedule of plans: the plan in force now, then the plan that takes over the
instant the next exception expires. The request path only compares the clock with `valid_until`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from bastion.config.loader import (
    ConfigError,
    Diagnostic,
    LoadedConfig,
    Positions,
    pydantic_diagnostics,
)
from bastion.config.models import SECTIONS, ApiConfig, Baseline, ExceptionConfig
from bastion.context import Decision, Deny, RequestContext
from bastion.governance.baseline import Weakening, merge, restore, weakenings
from bastion.openapi.loader import load_openapi
from bastion.pipeline import PIPELINE
from bastion.router import Router
from bastion.stages import response as response_layer
from bastion.stages.base import RouteInfo, Services, Stage


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where an API's requests go, and how the gateway may connect there."""

    name: str
    scheme: str
    host: str
    port: int
    path_prefix: str  # prepended to the forwarded path ("" when the upstream URL has no path)
    allow_private: bool = False  # a host name may resolve to a private/loopback/link-local address
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    authority: str = field(init=False, compare=False, repr=False)  # host[:port], as the Host header says it
    _hash: int = field(init=False, compare=False, repr=False)  # the pool key, looked up on every request

    def __post_init__(self) -> None:
        default = 443 if self.scheme == "https" else 80
        object.__setattr__(self, "authority", self.host if self.port == default else f"{self.host}:{self.port}")
        object.__setattr__(self, "_hash", hash((self.name, self.scheme, self.host, self.port, self.path_prefix,
                                                self.allow_private, self.tls_ca, self.tls_cert, self.tls_key,
                                                self.tls_server_name)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class Plan:
    """The controls of one route during one interval of time."""

    valid_until: float  # epoch seconds; math.inf when nothing expires
    policy: Baseline
    stages: tuple[Stage, ...]  # run on the request head
    body_stages: tuple[Stage, ...]  # run once the body is read
    exceptions: tuple[str, ...]  # exception ids in force
    waived: tuple[tuple[str, str], ...]  # (control, exception id) switched off entirely
    response: Any = None  # bastion.stages.response.ResponseFilter: what happens to the upstream's answer


@dataclass(slots=True)
class CompiledRoute:
    info: RouteInfo
    upstream: Upstream
    strip_prefix: str
    plans: list[Plan]
    admin: bool = False
    grpc: Any = None  # bastion.grpc.proxy.GrpcLimits: a gRPC method, forwarded over HTTP/2

    def plan(self, now: float) -> Plan:
        """The plan in force at `now`: an expired exception stops applying at its instant, not at a reload."""
        plans = self.plans
        while now >= plans[0].valid_until and len(plans) > 1:
            plans.pop(0)
        return plans[0]


@dataclass(slots=True)
class CompiledGateway:
    """Everything the data plane needs, built from one config."""

    config: LoadedConfig
    router: Router
    routes: list[CompiledRoute]
    config_hash: str
    loaded_at: float
    shared: dict[str, Any] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity != "error"]


@dataclass(slots=True)
class _RouteDecl:
    name: str
    path: str  # relative to the API's base path
    methods: list[str]
    policy: dict[str, Any]
    loc: tuple[str | int, ...]
    operation: dict[str, Any] | None = None
    admin: bool = False
    grpc_decode: Any = None  # decodes a gRPC request message to a dict (methods from a descriptor set)


def parse_upstream(api: ApiConfig, base_dir: Path | None = None) -> Upstream:
    url = urlsplit(api.upstream)
    port = url.port or (443 if url.scheme == "https" else 80)
    tls = api.upstream_tls

    def path(p: Path | None) -> str | None:
        if p is None:
            return None
        return str(p if p.is_absolute() or base_dir is None else base_dir / p)

    return Upstream(api.name, url.scheme, url.hostname or "", port, url.path.rstrip("/"), api.allow_private_upstream,
                    path(tls.ca) if tls else None, path(tls.client_cert) if tls else None,
                    path(tls.client_key) if tls else None, tls.server_name if tls else None)


_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _openapi_routes(api: ApiConfig, base_dir: Path, api_loc: tuple[str | int, ...],
                    diags: list[Diagnostic]) -> tuple[list[_RouteDecl], str]:
    """The operations of the API's OpenAPI document ($refs resolved), as routes named by operationId."""
    if api.openapi is None:
        return [], ""
    path = api.openapi if api.openapi.is_absolute() else base_dir / api.openapi
    try:
        doc = load_openapi(path)
    except ConfigError as exc:
        diags.extend(exc.diagnostics)
        return [], ""
    decls = []
    digest = hashlib.sha256()
    for file in doc.files or (path,):
        digest.update(file.read_bytes())
    for op in doc.operations:
        name = _NAME_SAFE.sub("-", op.operation_id or f"{op.method.lower()}-{op.path}").strip("-")
        decls.append(_RouteDecl(name, op.path, [op.method], {}, api_loc, op.operation,
                                bool(op.operation.get("x-bastion-admin", False))))
    return decls, digest.hexdigest()


def _grpc_routes(api: ApiConfig, base_dir: Path, api_loc: tuple[str | int, ...], diags: list[Diagnostic],
                 positions: Positions) -> tuple[list[_RouteDecl], str]:
    """The API's gRPC methods (descriptor set and/or listed) as `POST /package.Service/Method` routes."""
    grpc = api.grpc
    if grpc is None:
        return [], ""
    from bastion.grpc.routes import message_decoders, methods_from_descriptor_set, parse_method

    if api.base_path != "/":
        diags.append(positions.diagnostic((*api_loc, "base_path"), "a gRPC API is served at `/` (method paths "
                                          "are `/package.Service/Method`)"))
        return [], ""
    methods = []
    digest = hashlib.sha256()
    if grpc.descriptor_set is not None:
        path = grpc.descriptor_set if grpc.descriptor_set.is_absolute() else base_dir / grpc.descriptor_set
        try:
            data = path.read_bytes()
            methods.extend(methods_from_descriptor_set(data))
            digest.update(data)
        except (OSError, ValueError, ImportError) as exc:  # protobuf's DecodeError is a ValueError
            diags.append(positions.diagnostic((*api_loc, "grpc", "descriptor_set"),
                                              f"cannot read the descriptor set: {exc}"))
    for i, listed in enumerate(grpc.methods):
        try:
            methods.append(parse_method(listed))
        except ValueError as exc:
            diags.append(positions.diagnostic((*api_loc, "grpc", "methods", i), str(exc)))
    decls = [_RouteDecl(_NAME_SAFE.sub("-", f"{m.service}.{m.method}"), m.path, ["POST"], {}, api_loc)
             for m in dict.fromkeys(methods)]
    if grpc.descriptor_set is not None and decls and not _grpc_errors(diags, api_loc):
        try:
            decoders = message_decoders(data)
        except Exception as exc:  # a descriptor set protobuf cannot build message classes from
            diags.append(positions.diagnostic((*api_loc, "grpc", "descriptor_set"), f"cannot decode: {exc}"))
        else:
            for decl in decls:
                decl.grpc_decode = decoders.get(decl.path)
    return decls, digest.hexdigest()


def _grpc_errors(diags: list[Diagnostic], loc: tuple[str | int, ...]) -> bool:
    return any(d.severity == "error" and d.field.startswith(f"apis[{loc[1]}].grpc") for d in diags)


def _route_decls(api: ApiConfig, index: int, base_dir: Path, diags: list[Diagnostic],
                 positions: Positions) -> tuple[list[_RouteDecl], str]:
    api_loc: tuple[str | int, ...] = ("apis", index)
    decls, spec_hash = _openapi_routes(api, base_dir, api_loc, diags)
    grpc_decls, grpc_hash = _grpc_routes(api, base_dir, api_loc, diags, positions)
    decls += grpc_decls
    spec_hash += grpc_hash
    by_name = {d.name: d for d in decls}
    for r_index, route in enumerate(api.routes):
        loc = (*api_loc, "routes", r_index)
        if route.operation is not None:
            target = by_name.get(route.operation)
            if target is None:
                diags.append(positions.diagnostic((*loc, "operation"),
                                                  f"no operationId {route.operation!r} in {api.openapi}"))
                continue
            target.policy, target.loc, target.admin = route.policy, loc, route.admin or target.admin
            if route.name:
                target.name = route.name
            continue
        assert route.path is not None  # guaranteed by RouteConfig's validator
        name = route.name or _NAME_SAFE.sub("-", f"{'-'.join(route.methods)}{route.path}").strip("-")
        if name in by_name:
            diags.append(positions.diagnostic((*loc, "name"), f"route name {name!r} is used twice in API"))
            continue
        decl = _RouteDecl(name, route.path, route.methods, route.policy, loc, None, route.admin)
        by_name[name] = decl
        decls.append(decl)
    return decls, spec_hash


def _join(base: str, path: str) -> str:
    return (base.rstrip("/") + "/" + path.lstrip("/")).rstrip("/") or "/"


def _exception_diagnostics(exc: ExceptionConfig, index: int, max_days: int, now: float,
                           positions: Positions, diags: list[Diagnostic]) -> None:
    loc = ("exceptions", index)
    lifetime = (exc.expires - exc.created).total_seconds() / 86400
    if lifetime > max_days:
        diags.append(positions.diagnostic((*loc, "expires"),
                                          f"exception {exc.id} lasts {lifetime:.0f} days; the maximum is "
                                          f"{max_days} (gateway.max_exception_days)"))
    if exc.expires.timestamp() <= now:
        diags.append(positions.diagnostic((*loc, "expires"),
                                          f"exception {exc.id} expired at {exc.expires.isoformat()}; its "
                                          "controls are enforced again. Remove it or renew it", "warning"))


def compile_config(loaded: LoadedConfig, services: Services | None = None, *, now: float | None = None,
                   build_stages: bool = True) -> CompiledGateway:
    """Compile a validated config. Raises ConfigError listing every error; warnings stay on the result."""
    services = services or Services()
    now = services.wall_clock() if now is None else now
    cfg = loaded.model
    positions = loaded.positions
    base_dir = loaded.path.parent
    diags: list[Diagnostic] = []
    hasher = hashlib.sha256(loaded.text_hash.encode())

    for i, exc in enumerate(cfg.exceptions):
        _exception_diagnostics(exc, i, cfg.gateway.max_exception_days, now, positions, diags)
    ids = [e.id for e in cfg.exceptions]
    for i, exc_id in enumerate(ids):
        if ids.index(exc_id) != i:
            diags.append(positions.diagnostic(("exceptions", i, "id"), f"exception id {exc_id!r} is used twice"))

    shared: dict[Any, Any] = {}
    if build_stages:
        shared[response_layer.prepare] = response_layer.prepare(cfg, services)
        for spec in PIPELINE:
            if spec.prepare is not None and spec.prepare not in shared:
                try:
                    shared[spec.prepare] = spec.prepare(cfg, services)
                except ValueError as exc:  # a cross-section rule of that layer (e.g. duplicate consumers)
                    diags.append(positions.diagnostic((), f"{spec.section or 'gateway'}: {exc}"))
                    build_stages = False

    router = Router()
    routes: list[CompiledRoute] = []
    seen_apis: set[str] = set()
    used_exceptions: set[str] = set()
    route_names: dict[str, set[str]] = {}
    for a_index, api in enumerate(cfg.apis):
        api_loc = ("apis", a_index)
        if api.name in seen_apis:
            diags.append(positions.diagnostic((*api_loc, "name"), f"API name {api.name!r} is used twice"))
            continue
        seen_apis.add(api.name)
        if not api.owner:
            diags.append(positions.diagnostic(api_loc, f"API {api.name!r} has no `owner`: every API needs an "
                                              "accountable owner; its routes are not served"))
            continue
        klass = cfg.classes.get(api.klass)
        if klass is None:
            diags.append(positions.diagnostic((*api_loc, "class"),
                                              f"unknown class {api.klass!r} (classes: {', '.join(cfg.classes)})"))
            continue
        decls, spec_hash = _route_decls(api, a_index, base_dir, diags, positions)
        hasher.update(spec_hash.encode())
        route_names[api.name] = {d.name for d in decls}
        baseline_model = Baseline.model_validate(klass.model_dump(include=set(SECTIONS)))
        baseline = baseline_model.model_dump(mode="python")
        upstream = parse_upstream(api, base_dir)
        for field_name, file in (("ca", upstream.tls_ca), ("client_cert", upstream.tls_cert),
                                 ("client_key", upstream.tls_key)):
            if file is not None and not Path(file).is_file():
                diags.append(positions.diagnostic((*api_loc, "upstream_tls", field_name), f"no such file: {file}"))
        for decl in decls:
            compiled = _compile_route(api, decl, baseline, baseline_model, cfg.exceptions, now, positions,
                                      diags, used_exceptions, upstream, shared, build_stages)
            if compiled is None:
                continue
            routes.append(compiled)
            full = _join(api.base_path, decl.path)
            for method in decl.methods:
                clash = router.add(api.hosts, full, method, compiled)
                if clash is not None:
                    diags.append(positions.diagnostic(decl.loc, f"{method} {full} is already routed to "
                                                      f"{clash.info.route_id}"))

    for i, exc in enumerate(cfg.exceptions):
        loc = ("exceptions", i, "target")
        if exc.target.api not in route_names:
            diags.append(positions.diagnostic((*loc, "api"), f"exception {exc.id} targets unknown API "
                                              f"{exc.target.api!r}"))
        elif exc.target.route is not None and exc.target.route not in route_names[exc.target.api]:
            diags.append(positions.diagnostic((*loc, "route"), f"exception {exc.id} targets unknown route "
                                              f"{exc.target.api}/{exc.target.route}"))
        elif exc.id not in used_exceptions and exc.expires.timestamp() > now:
            diags.append(positions.diagnostic(("exceptions", i, "controls"), f"exception {exc.id} relaxes "
                                              "nothing: no targeted route weakens these controls", "warning"))

    from bastion.stages.input.crs.check import ruleset_digests
    from bastion.stages.traffic import tier_warnings

    for digest in ruleset_digests(r.plans[0].policy.input.crs for r in routes):  # CRS files are config too
        hasher.update(digest.encode())
    for message in tier_warnings(cfg):  # e.g. a consumer tier no limit names: a typo would lift its limits
        diags.append(positions.diagnostic(("consumers",), message, "warning"))
    errors = [d for d in diags if d.severity == "error"]
    if errors:
        raise ConfigError(diags)
    return CompiledGateway(loaded, router, routes, hasher.hexdigest()[:16], now, shared, diags)


class Unsatisfiable:
    """A control that cannot be built for a route: every request is refused (fail closed)."""

    def __init__(self, control: str, policy_id: str, reason: str) -> None:
        self.control = control
        self._deny = Deny(403, "policy_unsatisfiable", policy_id, log_detail=reason)

    async def check(self, ctx: RequestContext) -> Decision:
        return self._deny


def _covers(exc: ExceptionConfig, control: str) -> bool:
    """An exception naming `traffic.ip` covers `traffic.ip.allow`; one naming `traffic` covers all of it."""
    parts = control.split(".")
    return any(".".join(parts[:i]) in exc.controls for i in range(1, len(parts) + 1))


def _compile_route(api: ApiConfig, decl: _RouteDecl, baseline: dict[str, Any], baseline_model: Baseline,
                   exceptions: list[ExceptionConfig], now: float, positions: Positions,
                   diags: list[Diagnostic], used: set[str], upstream: Upstream,
                   shared: dict[Any, Any], build_stages: bool) -> CompiledRoute | None:
    route_id = f"{api.name}/{decl.name}"
    layers = [(f"api:{api.name}", api.policy), (f"route:{route_id}", decl.policy)]
    declared_data, sources = merge(baseline, *layers)
    try:
        declared = Baseline.model_validate(declared_data)
    except ValidationError as exc:
        # point at the layer that set the bad value: the route's policy if it has one, else the API's
        where = (*decl.loc, "policy") if decl.policy else ("apis", decl.loc[1], "policy")
        diags.extend(pydantic_diagnostics(exc, positions, where))
        return None

    mine = [e for e in exceptions
            if e.target.api == api.name and e.target.route in (None, decl.name)]
    weak = weakenings(baseline_model, declared, sources)
    for w in weak:
        covering = [e for e in mine if _covers(e, w.control)]
        if not covering:
            diags.append(positions.diagnostic(_loc_of(w, decl), _weak_message(w, route_id, api.klass)))
        elif all(e.expires.timestamp() <= now for e in covering):
            diags.append(positions.diagnostic(_loc_of(w, decl), f"route {route_id} sets {w.control} weaker than "
                                              f"class {api.klass!r}, but its exception expired: the class "
                                              "baseline is enforced", "warning"))
        used.update(e.id for e in covering)
    for e in mine:  # a whole-section waiver is used by every route it targets
        if any("." not in c for c in e.controls):
            used.add(e.id)

    # every instant at which an exception starts or stops applying splits the timeline into plans
    points = sorted({t for e in mine for t in (e.created.timestamp(), e.expires.timestamp()) if t > now})
    starts = [now, *points]
    ends = [*points, math.inf]
    path = _join(api.base_path, decl.path)
    params = tuple(p[1:-1] for p in path.split("/") if p.startswith("{") and p.endswith("}"))
    info_sources = dict(sources)
    plans: list[Plan] = []
    infos: list[RouteInfo] = []
    for start, end in zip(starts, ends, strict=True):
        active = [e for e in mine if e.created.timestamp() <= start < e.expires.timestamp()]
        relaxed = {w.control for w in weak if any(_covers(e, w.control) for e in active)}
        data = restore(declared_data, baseline, {w.control for w in weak} - relaxed)
        policy = Baseline.model_validate(data)
        waived_sections = {c: e.id for e in active for c in e.controls if "." not in c}
        srcs = dict(info_sources)
        for control in {w.control for w in weak} - relaxed:  # restored: the class enforces it again
            srcs[control] = f"class:{api.klass}"
        for control in relaxed:
            exc_id = next(e.id for e in active if _covers(e, control))
            srcs[control] = f"exception:{exc_id}"
        for section, exc_id in waived_sections.items():
            srcs[section] = f"exception:{exc_id}"
        info = RouteInfo(api=api.name, route=decl.name, klass=api.klass, path=path,
                         methods=frozenset(decl.methods), path_params=params, operation=decl.operation,
                         admin=decl.admin, sources=srcs)
        head: list[Stage] = []
        body: list[Stage] = []
        if build_stages:
            for spec in PIPELINE:
                if spec.section in waived_sections:
                    continue
                try:
                    section = getattr(policy, spec.section) if spec.section else None
                    stage = spec.build(section, info, shared.get(spec.prepare) if spec.prepare else None)
                except ValueError as exc:  # e.g. a condition that does not compile
                    if start <= now:
                        diags.append(positions.diagnostic((*decl.loc, "policy", spec.section or ""), str(exc)))
                        continue
                    # a later plan (once an exception ends) that cannot be satisfied: the route will refuse
                    # every request from then on, fail closed, and the operator is told now
                    when = datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")
                    diags.append(positions.diagnostic((*decl.loc, "policy", spec.section or ""),
                                                      f"from {when}, when its exception ends: {exc}; the route "
                                                      "will refuse every request then", "warning"))
                    stage = Unsatisfiable(spec.section or "gateway", info.policy_id(spec.section or "gateway"),
                                          str(exc))

                if stage is not None:
                    if getattr(stage, "needs_body", False):
                        # gRPC bodies are framed messages, streamed: only owner rules on message fields
                        # (authz, reading the decoded first message) run on them
                        if api.grpc is None or (spec.section == "authz" and decl.grpc_decode is not None):
                            body.append(stage)
                    elif not head or stage is not head[-1]:  # the same stage again with nothing between
                        head.append(stage)  # (blocks, when no identity stage ran) would decide the same
        response = None
        if build_stages and "response" not in waived_sections and api.grpc is None:
            try:
                response = response_layer.build(policy.response, info, shared.get(response_layer.prepare))
            except ValueError as exc:
                diags.append(positions.diagnostic((*decl.loc, "policy", "response"), str(exc)))
        plans.append(Plan(end, policy, tuple(head), tuple(body), tuple(e.id for e in active),
                          tuple(sorted(waived_sections.items())), response))
        infos.append(info)
    strip = api.base_path if api.strip_base_path else ""
    grpc = None
    if api.grpc is not None:
        from bastion.grpc.proxy import GrpcLimits  # imports the server's upstream module, which imports this one

        g = api.grpc
        grpc = GrpcLimits(max_message_bytes=g.max_message_bytes, max_messages=g.max_messages,
                          default_timeout=g.default_timeout, max_timeout=g.max_timeout,
                          connect_timeout=plans[0].policy.traffic.upstream_connect_timeout,
                          decode=decl.grpc_decode)
    return CompiledRoute(infos[0], upstream, strip, plans, decl.admin, grpc)


def _loc_of(w: Weakening, decl: _RouteDecl) -> tuple[str | int, ...]:
    parts = tuple(w.control.split("."))
    if w.origin.startswith("route:"):
        return (*decl.loc, "policy", *parts)
    return ("apis", decl.loc[1], "policy", *parts)


def _weak_message(w: Weakening, route_id: str, klass: str) -> str:
    return (f"route {route_id} sets {w.control} = {w.declared!r}, weaker than its class {klass!r} "
            f"({w.baseline!r}); tighten it, or add an exception (owner, reason, evidence, expires) that names "
            f"{w.control}")


def utc_now() -> datetime:
    return datetime.now(UTC)
