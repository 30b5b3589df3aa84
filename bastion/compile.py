"""Config + OpenAPI -> frozen per-route policy objects, built once per (re)load.

For every route this computes the effective policy (class baseline tightened by API and route, loosened only
by an exception in force) and a schedule of plans: the plan in force now, then the plan that takes over the
instant the next exception expires. The request path only compares the clock with `valid_until`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
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
from bastion.forwarding import GrpcLimits, Upstream
from bastion.governance.baseline import Weakening, merge, restore, weakenings
from bastion.http.websocket import websocket_config
from bastion.openapi.loader import load_openapi
from bastion.pipeline import PIPELINE, Prepared, StageSpec, prepare
from bastion.router import Router
from bastion.stages.base import RouteInfo, Services, Stage
from bastion.stages.traffic import tier_warnings
from bastion.upstreams.config import targets_of
from bastion.upstreams.spec import pool_spec


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
    info: RouteInfo | None = None  # the route as this plan sees it: sources name the exceptions in force
    enforces: bool = field(init=False, compare=False)  # anything to run or record before forwarding

    def __post_init__(self) -> None:
        object.__setattr__(self, "enforces", bool(self.stages or self.body_stages or self.waived))


@dataclass(slots=True)
class CompiledRoute:
    info: RouteInfo
    upstream: Upstream
    strip_prefix: str
    plans: list[Plan]
    admin: bool = False
    grpc: Any = None  # bastion.forwarding.GrpcLimits: a gRPC method, forwarded over HTTP/2
    websocket: Any = None  # bastion.http.websocket.WebSocketConfig: WebSocket upgrades accepted, with limits

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
    shared: Prepared = field(default_factory=Prepared)  # what the layers prepared for this config, by name
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
    websocket: Any = None  # bastion.http.websocket.WebSocketConfig: the route accepts WebSocket upgrades


def _key(key: Any, path: Callable[[Path | None], str | None]) -> Any:
    """The upstream client key: a resolved path, or its secret reference as configured (never a value here)."""
    return path(key) if isinstance(key, Path) or key is None else key


def parse_upstream(api: ApiConfig, base_dir: Path | None = None) -> Upstream:
    url = urlsplit(api.upstream if isinstance(api.upstream, str) else targets_of(api.upstream)[0].url)
    port = url.port or (443 if url.scheme == "https" else 80)
    tls = api.upstream_tls

    def path(p: Path | None) -> str | None:
        if p is None:
            return None
        return str(p if p.is_absolute() or base_dir is None else base_dir / p)

    return Upstream(api.name, url.scheme, url.hostname or "", port, url.path.rstrip("/"), api.allow_private_upstream,
                    path(tls.ca) if tls else None, path(tls.client_cert) if tls else None,
                    _key(tls.client_key, path) if tls else None, tls.server_name if tls else None,
                    pool_spec(api.upstream, api.load_balancing))


_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _openapi_routes(api: ApiConfig, base_dir: Path, api_loc: tuple[str | int, ...],
                    diags: list[Diagnostic]) -> tuple[list[_RouteDecl], str]:
    """The operations of the API's OpenAPI document ($refs resolved), as routes named by operationId."""
    if api.openapi is None:
        return [], ""
    path = api.openapi if api.openapi.is_absolute() else base_dir / api.openapi
    try:
        doc = load_openapi(path, api.openapi_max_bytes)
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
            target.websocket = websocket_config(route.websocket)
            if route.name:
                target.name = route.name
            continue
        assert route.path is not None  # guaranteed by RouteConfig's validator
        name = route.name or _NAME_SAFE.sub("-", f"{'-'.join(route.methods)}{route.path}").strip("-")
        if name in by_name:
            diags.append(positions.diagnostic((*loc, "name"), f"route name {name!r} is used twice in API"))
            continue
        decl = _RouteDecl(name, route.path, route.methods, route.policy, loc, None, route.admin,
                          websocket=websocket_config(route.websocket))
        by_name[name] = decl
        decls.append(decl)
    return decls, spec_hash


def _join(base: str, path: str) -> str:
    return (base.rstrip("/") + "/" + path.lstrip("/")).rstrip("/") or "/"


def _exception_diagnostics(waiver: ExceptionConfig, index: int, max_days: int, now: float,
                           positions: Positions, diags: list[Diagnostic]) -> None:
    loc = ("exceptions", index)
    lifetime = (waiver.expires - waiver.created).total_seconds() / 86400
    if lifetime > max_days:
        diags.append(positions.diagnostic((*loc, "expires"),
                                          f"exception {waiver.id} lasts {lifetime:.0f} days; the maximum is "
                                          f"{max_days} (gateway.max_exception_days)"))
    if waiver.expires.timestamp() <= now:
        diags.append(positions.diagnostic((*loc, "expires"),
                                          f"exception {waiver.id} expired at {waiver.expires.isoformat()}; its "
                                          "controls are enforced again. Remove it or renew it", "warning"))


@dataclass(slots=True)
class _Build:
    """One compilation: the config, the instant it is compiled for, what the layers prepared, and what it found."""

    cfg: Any  # bastion.config.models.BastionConfig
    positions: Positions
    base_dir: Path
    now: float
    prepared: Prepared
    build_stages: bool
    diags: list[Diagnostic] = field(default_factory=list)
    used_waivers: set[str] = field(default_factory=set)  # exception ids that relax something somewhere

    def error(self, loc: tuple[str | int, ...], message: str, severity: str = "error") -> None:
        self.diags.append(self.positions.diagnostic(loc, message, severity))


def compile_config(loaded: LoadedConfig, services: Services | None = None, *, now: float | None = None,
                   build_stages: bool = True) -> CompiledGateway:
    """Compile a validated config. Raises ConfigError listing every error; warnings stay on the result."""
    services = services or Services()
    services.config_dir = loaded.path.parent  # the stages open relative files from there, as validate does
    build = _Build(loaded.model, loaded.positions, loaded.path.parent,
                   services.wall_clock() if now is None else now, Prepared(), build_stages)
    _check_waivers(build)
    if build_stages:
        problems: list[str] = []
        build.prepared = prepare(build.cfg, services, problems)
        for problem in problems:  # a cross-section rule of a layer (e.g. duplicate consumers)
            build.error((), problem)
        build.build_stages = not problems
    router = Router()
    routes: list[CompiledRoute] = []
    seen: set[str] = set()
    route_names: dict[str, set[str]] = {}  # API name -> its route names, for the exceptions' targets
    hasher = hashlib.sha256(loaded.text_hash.encode())
    for index, api in enumerate(build.cfg.apis):
        if api.name in seen:
            build.error(("apis", index, "name"), f"API name {api.name!r} is used twice")
            continue
        seen.add(api.name)
        compiled = _compile_api(build, api, index, router)
        if compiled is None:
            continue
        api_routes, names, spec_hash = compiled
        routes += api_routes
        route_names[api.name] = names
        hasher.update(spec_hash.encode())
    _check_waiver_targets(build, route_names)
    from bastion.stages.input.crs.check import ruleset_digests

    for digest in ruleset_digests(r.plans[0].policy.input.crs for r in routes):  # CRS files are config too
        hasher.update(digest.encode())
    for message in tier_warnings(build.cfg):  # e.g. a consumer tier no limit names: a typo would lift its limits
        build.error(("consumers",), message, "warning")
    from bastion.stages.transport.listeners import listener_conflicts

    for where, message in listener_conflicts(build.cfg):  # a class demanding more TLS than a listener offers
        build.diags.append(build.positions.diagnostic(where, message))
    from bastion.stages.flows import flow_diagnostics

    for where, message in flow_diagnostics(build.cfg.flows, route_names):  # a flow step naming no route
        build.diags.append(build.positions.diagnostic(where, message))
    if any(d.severity == "error" for d in build.diags):
        raise ConfigError(build.diags)
    return CompiledGateway(loaded, router, routes, hasher.hexdigest()[:16], build.now, build.prepared,
                           build.diags)


def _check_waivers(build: _Build) -> None:
    """Each exception's lifetime and expiry, and that its id is unique."""
    waivers = build.cfg.exceptions
    for i, waiver in enumerate(waivers):
        _exception_diagnostics(waiver, i, build.cfg.gateway.max_exception_days, build.now, build.positions,
                               build.diags)
    ids = [w.id for w in waivers]
    for i, waiver_id in enumerate(ids):
        if ids.index(waiver_id) != i:
            build.error(("exceptions", i, "id"), f"exception id {waiver_id!r} is used twice")


def _check_waiver_targets(build: _Build, route_names: dict[str, set[str]]) -> None:
    """Every exception targets an API and route that exist, and relaxes something while it is in force."""
    for i, waiver in enumerate(build.cfg.exceptions):
        loc = ("exceptions", i, "target")
        target = waiver.target
        if target.api not in route_names:
            build.error((*loc, "api"), f"exception {waiver.id} targets unknown API {target.api!r}")
        elif target.route is not None and target.route not in route_names[target.api]:
            build.error((*loc, "route"), f"exception {waiver.id} targets unknown route {target.api}/{target.route}")
        elif waiver.id not in build.used_waivers and waiver.expires.timestamp() > build.now:
            build.error(("exceptions", i, "controls"), f"exception {waiver.id} relaxes nothing: no targeted route "
                        "weakens these controls", "warning")


def _compile_api(build: _Build, api: ApiConfig, index: int,
                 router: Router) -> tuple[list[CompiledRoute], set[str], str] | None:
    """The routes of one API, added to `router`: (routes, their names, hash of its specs). None: not served."""
    api_loc = ("apis", index)
    if not api.owner:
        build.error(api_loc, f"API {api.name!r} has no `owner`: every API needs an accountable owner; its routes "
                    "are not served")
        return None
    klass = build.cfg.classes.get(api.klass)
    if klass is None:
        build.error((*api_loc, "class"), f"unknown class {api.klass!r} (classes: {', '.join(build.cfg.classes)})")
        return None
    decls, spec_hash = _route_decls(api, index, build.base_dir, build.diags, build.positions)
    baseline_model = Baseline.model_validate(klass.model_dump(include=set(SECTIONS)))
    upstream = parse_upstream(api, build.base_dir)
    if upstream.pool is not None and api.grpc is not None:
        build.error((*api_loc, "upstream"), "a gRPC API has one upstream URL (pools of targets are for HTTP APIs)")
        return None
    for field_name, file in (("ca", upstream.tls_ca), ("client_cert", upstream.tls_cert),
                             ("client_key", upstream.tls_key)):
        if isinstance(file, str) and not Path(file).is_file():  # a key by reference was read when loaded
            build.error((*api_loc, "upstream_tls", field_name), f"no such file: {file}")
    routes = []
    for decl in decls:
        route = _compile_route(build, api, decl, baseline_model, upstream)
        if route is None:
            continue
        routes.append(route)
        full = _join(api.base_path, decl.path)
        for method in decl.methods:
            clash = router.add(api.hosts, full, method, route)
            if clash is not None:
                build.error(decl.loc, f"{method} {full} is already routed to {clash.info.route_id}")
    return routes, {d.name for d in decls}, spec_hash


class Unsatisfiable:
    """A control that cannot be built for a route: every request is refused (fail closed)."""

    needs_body = False

    def __init__(self, control: str, policy_id: str, reason: str) -> None:
        self.control = control
        self._deny = Deny(403, "policy_unsatisfiable", policy_id, log_detail=reason)

    async def check(self, ctx: RequestContext) -> Decision:
        return self._deny


def _covers(waiver: ExceptionConfig, control: str) -> bool:
    """An exception naming `traffic.ip` covers `traffic.ip.allow`; one naming `traffic` covers all of it."""
    parts = control.split(".")
    return any(".".join(parts[:i]) in waiver.controls for i in range(1, len(parts) + 1))


def _compile_route(build: _Build, api: ApiConfig, decl: _RouteDecl, baseline_model: Baseline,
                   upstream: Upstream) -> CompiledRoute | None:
    """One route: its declared policy checked against the class baseline, then one plan per interval between the
    instants its exceptions start or stop applying."""
    route_id = f"{api.name}/{decl.name}"
    baseline = baseline_model.model_dump(mode="python")
    declared_data, sources = merge(baseline, (f"api:{api.name}", api.policy), (f"route:{route_id}", decl.policy))
    try:
        declared = Baseline.model_validate(declared_data)
    except ValidationError as invalid:
        # point at the layer that set the bad value: the route's policy if it has one, else the API's
        where = (*decl.loc, "policy") if decl.policy else ("apis", decl.loc[1], "policy")
        build.diags.extend(pydantic_diagnostics(invalid, build.positions, where))
        return None
    waivers = [w for w in build.cfg.exceptions if w.target.api == api.name and w.target.route in (None, decl.name)]
    weak = _weakenings_checked(build, api, decl, baseline_model, declared, sources, waivers)
    path = _join(api.base_path, decl.path)
    params = tuple(p[1:-1] for p in path.split("/") if p.startswith("{") and p.endswith("}"))
    plans: list[Plan] = []
    infos: list[RouteInfo] = []
    for start, end in _intervals(waivers, build.now):
        active = [w for w in waivers if w.created.timestamp() <= start < w.expires.timestamp()]
        relaxed = {w.control for w in weak if any(_covers(waiver, w.control) for waiver in active)}
        restored = {w.control for w in weak} - relaxed  # weaker than the class and not (or no longer) waived
        policy = Baseline.model_validate(restore(declared_data, baseline, restored))
        waived_sections = {c: w.id for w in active for c in w.controls if "." not in c}
        info = RouteInfo(api=api.name, route=decl.name, klass=api.klass, path=path, methods=frozenset(decl.methods),
                         path_params=params, operation=decl.operation, admin=decl.admin,
                         sources=_sources(sources, api.klass, restored, relaxed, active, waived_sections))
        head, body, response = _stages(build, api, decl, policy, info, waived_sections, start)
        plans.append(Plan(end, policy, head, body, tuple(w.id for w in active),
                          tuple(sorted(waived_sections.items())), response, info))
        infos.append(info)
    strip = api.base_path if api.strip_base_path else ""
    return CompiledRoute(infos[0], upstream, strip, plans, decl.admin, _grpc_limits(api, decl, plans[0]),
                         decl.websocket)


def _weakenings_checked(build: _Build, api: ApiConfig, decl: _RouteDecl, baseline: Baseline, declared: Baseline,
                        sources: dict[str, str], waivers: list[ExceptionConfig]) -> list[Weakening]:
    """Where the route is weaker than its class: an error without an exception that covers it, a warning once that
    exception expired. Records the exceptions that are used."""
    route_id = f"{api.name}/{decl.name}"
    weak = weakenings(baseline, declared, sources)
    for w in weak:
        covering = [waiver for waiver in waivers if _covers(waiver, w.control)]
        if not covering:
            build.error(_loc_of(w, decl), _weak_message(w, route_id, api.klass))
        elif all(waiver.expires.timestamp() <= build.now for waiver in covering):
            build.error(_loc_of(w, decl), f"route {route_id} sets {w.control} weaker than class {api.klass!r}, but "
                        "its exception expired: the class baseline is enforced", "warning")
        build.used_waivers.update(waiver.id for waiver in covering)
    for waiver in waivers:  # a whole-section waiver is used by every route it targets
        if any("." not in c for c in waiver.controls):
            build.used_waivers.add(waiver.id)
    return weak


def _intervals(waivers: list[ExceptionConfig], now: float) -> list[tuple[float, float]]:
    """[start, end) intervals from `now` on, split at every instant an exception starts or stops applying."""
    points = sorted({t for w in waivers for t in (w.created.timestamp(), w.expires.timestamp()) if t > now})
    return list(zip([now, *points], [*points, math.inf], strict=True))


def _sources(declared: dict[str, str], klass: str, restored: set[str], relaxed: set[str],
             active: list[ExceptionConfig], waived_sections: dict[str, str]) -> dict[str, str]:
    """Where each control's value comes from during one interval (class, API, route or exception)."""
    sources = dict(declared)
    for control in restored:  # the class enforces it again
        sources[control] = f"class:{klass}"
    for control in relaxed:
        sources[control] = "exception:" + next(w.id for w in active if _covers(w, control))
    for section, waiver_id in waived_sections.items():
        sources[section] = f"exception:{waiver_id}"
    return sources


def _stages(build: _Build, api: ApiConfig, decl: _RouteDecl, policy: Baseline, info: RouteInfo,
            waived_sections: dict[str, str], start: float) -> tuple[tuple[Stage, ...], tuple[Stage, ...], Any]:
    """The route's head stages, body stages and response filter for one interval, in PIPELINE order."""
    head: list[Stage] = []
    body: list[Stage] = []
    response = None
    if not build.build_stages:
        return (), (), None
    for spec in PIPELINE:
        if spec.section in waived_sections or (spec.phase == "response" and api.grpc is not None):
            continue  # waived; gRPC answers are relayed as they are (trailers carry their status)
        stage = _build_stage(build, spec, policy, info, decl, start)
        if stage is None:
            continue
        if spec.phase == "response":
            response = stage
        elif stage.needs_body:
            # gRPC bodies are framed messages, streamed: only owner rules on message fields (authz, reading the
            # decoded first message) run on them
            if api.grpc is None or (spec.section == "authz" and decl.grpc_decode is not None):
                body.append(stage)
        elif not head or stage is not head[-1]:  # the same stage again with nothing between (blocks, when
            head.append(stage)  # no identity stage ran) would decide the same
    return tuple(head), tuple(body), response


def _build_stage(build: _Build, spec: StageSpec, policy: Baseline, info: RouteInfo, decl: _RouteDecl,
                 start: float) -> Any:
    """One step of the pipeline for one route. A control that does not build fails the config now, or, in a later
    interval (once an exception ends), makes the route refuse every request from then on."""
    section_name = spec.section or ""
    try:
        section = getattr(policy, spec.section) if spec.section else None
        return spec.build(section, info, spec.shared(build.prepared) if spec.shared is not None else None)
    except ValueError as invalid:  # e.g. a condition that does not compile
        loc = (*decl.loc, "policy", section_name)
        if start <= build.now:
            build.error(loc, str(invalid))
            return None
        when = datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")
        build.error(loc, f"from {when}, when its exception ends: {invalid}; the route will refuse every request "
                    "then", "warning")
        if spec.phase == "response":
            return None
        control = spec.section or "gateway"
        return Unsatisfiable(control, info.policy_id(control), str(invalid))


def _grpc_limits(api: ApiConfig, decl: _RouteDecl, first: Plan) -> Any:
    """The gRPC limits of a gRPC method's route (None for HTTP routes)."""
    if api.grpc is None:
        return None
    g = api.grpc
    return GrpcLimits(max_message_bytes=g.max_message_bytes, max_messages=g.max_messages,
                      default_timeout=g.default_timeout, max_timeout=g.max_timeout,
                      connect_timeout=first.policy.traffic.upstream_connect_timeout, decode=decl.grpc_decode)


def _loc_of(w: Weakening, decl: _RouteDecl) -> tuple[str | int, ...]:
    parts = tuple(w.control.split("."))
    if w.origin.startswith("route:"):
        return (*decl.loc, "policy", *parts)
    return ("apis", decl.loc[1], "policy", *parts)


def _weak_message(w: Weakening, route_id: str, klass: str) -> str:
    return (f"route {route_id} sets {w.control} = {_yaml(w.declared)}, weaker than its class {klass!r} "
            f"({_yaml(w.baseline)}); tighten it, or add an exception (owner, reason, evidence, expires) that names "
            f"{w.control}")


def _yaml(value: Any) -> str:
    """A config value as the YAML would write it (`false`, `["jwt"]`), not as Python prints it."""
    import json

    return json.dumps(value, default=str)


def utc_now() -> datetime:
    return datetime.now(UTC)
