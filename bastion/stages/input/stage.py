"""The input stages: the request contract (positive model) and injection inspection (negative model).

Two stages per route, built once from the route's OpenAPI operation:
- `HeadStage` runs before any body byte is read: parameters, undeclared query parameters, Content-Type,
  and inspection of parameter and header values.
- `BodyStage` (`needs_body = True`) runs on the buffered body: JSON limits and strictness, the body schema,
  undeclared properties (rejected, or stripped by rewriting `ctx.body`), and inspection of every string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bastion.context import Continue, ControlRecord, Decision, Deny, RequestContext
from bastion.openapi.keys import REFS_KEY
from bastion.stages.base import RouteInfo, Services
from bastion.stages.input import jsonbody
from bastion.stages.input.config import InputPolicy
from bastion.stages.input.crs import check as crs
from bastion.stages.input.crs.request import Part as CrsPart
from bastion.stages.input.crs.scope import (
    Kind,
    Scope,
    classify,
    form_kinds,
    operation_scope,
    parameter_kinds,
    with_query,
)
from bastion.stages.input.inspection import Finding, Inspector, RuleSet, load_rules
from bastion.stages.input.media import (
    FormError,
    encode_form,
    is_json,
    match_media,
    media_type,
    parse_form,
    parse_multipart,
)
from bastion.stages.input.params import ParameterError, ParameterSet, coerce, parse_cookies, parse_query
from bastion.stages.input.schema import compile_schema, explain, normaliser, pointer, undeclared_names

_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})


@dataclass(slots=True)
class InputShared:
    """Built once per config load: the compiled rule set and one inspector per distinct setting."""

    rules: RuleSet
    inspectors: dict[tuple[int, tuple[str, ...], int], Inspector]

    def inspector(self, policy: InputPolicy) -> Inspector | None:
        if policy.inspection == "off" or not policy.inspection_categories:
            return None
        key = (policy.paranoia, tuple(sorted(policy.inspection_categories)), policy.anomaly_threshold)
        if key not in self.inspectors:
            self.inspectors[key] = Inspector(self.rules, policy.paranoia, set(key[1]), policy.anomaly_threshold)
        return self.inspectors[key]


def prepare(config: Any, services: Services) -> InputShared:
    return InputShared(load_rules(), {})


class _Common:
    """What both stages share: policy ids, the inspector and the exclusions."""

    control = "input"
    needs_body = False

    def __init__(self, policy: InputPolicy, route: RouteInfo, shared: InputShared | None) -> None:
        self.policy = policy
        self.contract = policy.contract == "enforce" and route.operation is not None
        self.inspector = (shared or InputShared(load_rules(), {})).inspector(policy)
        self.block = policy.inspection == "block"
        self.excluded = tuple(policy.inspection_exclude)
        self.pid_contract = route.policy_id("input.contract")
        self.pid_undeclared = route.policy_id("input.undeclared")
        self.pid_limits = route.policy_id("input.max_json_depth")
        self.pid_inspection = route.policy_id("input.inspection")
        self.allow = Continue(self.pid_contract)  # built once: the audit names the control that let it through
        self.crs = crs.CrsCheck(policy.crs, self.block, route.policy_id("input.crs")) \
            if policy.crs.enabled and policy.inspection != "off" else None
        op = route.operation or {}
        # the CRS sees the whole request once: in the body stage when one runs and a body comes, else here
        self.body_stage = not (route.methods <= _NO_BODY_METHODS and not op.get("requestBody"))

    def is_excluded(self, where: str) -> bool:
        return any(where == ex or where.startswith(ex + "/") for ex in self.excluded)

    def inspect(self, ctx: RequestContext, values: list[tuple[str, str, str]]) -> Deny | None:
        """`values`: (exclusion key, public label, value). Block: the first attack is a 400; detect: a record."""
        inspector = self.inspector
        if inspector is None:
            return None
        for key, label, value in values:
            if self.excluded and self.is_excluded(key):
                continue
            finding = inspector.inspect(value)
            if finding is not None:
                deny = self.report(ctx, key, label, finding)
                if deny is not None:
                    return deny
        return None

    def report(self, ctx: RequestContext, key: str, label: str, finding: Finding) -> Deny | None:
        """Block: the 400 to return. Detect: a record for the audit event, and the request goes on."""
        if self.block:
            return Deny(400, f"input_injection_{finding.category}", self.pid_inspection,
                        f"The {label} was refused by content inspection.", log_detail=_finding_log(key, finding))
        ctx.records.append(ControlRecord("input.inspection", "detect", self.pid_inspection,
                                         f"input_injection_{finding.category}"))
        return None

    def invalid(self, reason: str, detail: str, policy_id: str | None = None) -> Deny:
        return Deny(400, reason, policy_id or self.pid_contract, detail, log_detail=detail)


def _finding_log(key: str, finding: Finding) -> str:
    return f"{key}: {finding.category} score {finding.score} rules {','.join(finding.rules)}"


class HeadStage(_Common):
    """Parameters, Content-Type and header inspection, on the request head."""

    def __init__(self, policy: InputPolicy, route: RouteInfo, shared: InputShared | None) -> None:
        super().__init__(policy, route, shared)
        op = route.operation or {}
        self.params: ParameterSet | None = None
        self.validator = None
        body = op.get("requestBody") if isinstance(op.get("requestBody"), dict) else None
        self.body_content: dict[str, Any] = (body or {}).get("content") or {}
        self.body_declared = body is not None
        self.body_required = bool((body or {}).get("required"))
        if self.contract:
            self.params = ParameterSet(op.get("parameters") or [], normaliser(op, closed=False))
            self.validator = compile_schema(self.params.schema)
        self.headers = tuple(h.lower() for h in policy.inspected_headers)
        # API-aware CRS: query parameters the contract types are not inspected by negative rules
        self.query_kinds: dict[str, Kind] = parameter_kinds(op.get("parameters") or [], op.get(REFS_KEY)) \
            if self.contract and self.crs is not None else {}

    async def check(self, ctx: RequestContext) -> Decision:
        try:
            query = parse_query(ctx.query)
        except ParameterError as exc:
            return self.invalid("input_invalid_parameter", f"The {exc.where} {exc.why}.")
        if self.contract:
            deny = self._contract(ctx, query)
            if deny is not None:
                return deny
        if self.inspector is not None:
            deny = self.inspect(ctx, self._values(ctx, query))
            if deny is not None:
                return deny
        if self.crs is not None and not (self.body_stage and _has_body(ctx)):
            deny = self.crs.run(ctx, crs.head_request(ctx), self.query_kinds or None)
            if deny is not None:
                return deny
        return self.allow

    def _contract(self, ctx: RequestContext, query: list[tuple[str, str]]) -> Deny | None:
        params, validator = self.params, self.validator
        if params is None or validator is None:  # both are set whenever the contract is on
            return None
        mode = self.policy.undeclared
        if mode != "allow":
            for name, _ in query:
                if name not in ctx.drop_query_params and not params.is_declared_query(name):
                    if mode == "reject":
                        return Deny(400, "input_undeclared_field", self.pid_undeclared,
                                    f"The query parameter '{name}' is not declared by this operation.")
                    ctx.drop_query_params.add(name)
            if ctx.drop_query_params:
                query = [(k, v) for k, v in query if k not in ctx.drop_query_params]
        try:
            values = params.collect(ctx.path_params, query, ctx.headers, parse_cookies(ctx.headers))
        except ParameterError as exc:
            return self.invalid("input_invalid_parameter", f"The {exc.where} {exc.why}.")
        if not validator.is_valid(values):
            error = next(iter(validator.iter_errors(values)))
            return self.invalid("input_invalid_parameter", _param_detail(error))
        return self._content_type(ctx)

    def _content_type(self, ctx: RequestContext) -> Deny | None:
        if not _has_body(ctx):
            if self.body_required:
                return self.invalid("input_invalid_body", "This operation requires a request body.")
            return None
        if not self.body_declared:
            if ctx.method in _NO_BODY_METHODS:
                return self.invalid("input_invalid_body", "This operation takes no request body.")
            return None
        kind, _ = media_type(ctx.header("content-type"))
        if match_media(kind, self.body_content) is None:
            accepted = ", ".join(sorted(self.body_content))
            return Deny(415, "input_unsupported_media_type", self.pid_contract,
                        f"Content-Type must be one of: {accepted}.", headers=(("accept-post", accepted),)
                        if ctx.method == "POST" else ())
        return None

    def _values(self, ctx: RequestContext, query: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
        out = [(f"path.{k}", f"path parameter '{k}'", v) for k, v in ctx.path_params.items()]
        out += [(f"query.{k}", f"query parameter '{k}'", v) for k, v in query]
        out += [(f"query.{k}", f"query parameter '{k}'", k) for k, _ in query]  # names are input too
        declared = {p.name for p in self.params.header_params} if self.params else set()
        for name, value in ctx.headers:
            if name in self.headers or name in declared:
                out.append((f"header.{name}", f"header '{name}'", value))
        if self.params and self.params.cookie_params:
            cookies = parse_cookies(ctx.headers)
            for p in self.params.cookie_params:
                if p.name in cookies:
                    out.append((f"cookie.{p.name}", f"cookie '{p.name}'", cookies[p.name]))
        return out


def _has_body(ctx: RequestContext) -> bool:
    length = ctx.header("content-length")
    return (length is not None and length.strip() != "0") or ctx.header("transfer-encoding") is not None


def _param_detail(error: Any) -> str:
    path = list(error.instance_path)
    if error.kind.name == "required" and len(path) == 1:
        return f"The {path[0]} parameter '{error.kind.as_dict().get('property')}' is required."
    location, name, rest = path[0], path[1], path[2:]
    where = f"{location} parameter '{name}'" + (f" at {pointer(rest)}" if rest else "")
    return f"The {where} {explain(error)}."


class BodyStage(_Common):
    """The buffered body: strict JSON, limits, schema, undeclared properties and inspection."""

    needs_body = True

    def __init__(self, policy: InputPolicy, route: RouteInfo, shared: InputShared | None) -> None:
        super().__init__(policy, route, shared)
        op = route.operation or {}
        body = op.get("requestBody") if isinstance(op.get("requestBody"), dict) else {}
        self.content: dict[str, Any] = (body or {}).get("content") or {}
        self.limits = jsonbody.JsonLimits(policy.max_json_depth, policy.max_json_string, policy.max_json_array,
                                          policy.max_json_keys)
        closed = policy.undeclared != "allow"
        norm = normaliser(op, closed=closed)
        self.schemas: dict[str, tuple[Any, Any]] = {}  # content key -> (normalised schema, validator)
        self.scopes: dict[str, Scope] = {}  # content key -> API-aware CRS scope of its fields
        if self.contract:
            for key, media in self.content.items():
                schema = (media or {}).get("schema")
                if schema is not None:
                    normalised = norm.root(schema)
                    self.schemas[key] = (normalised, compile_schema(normalised))
                    scope = operation_scope(op, key) if self.crs is not None else None
                    if scope is not None:
                        self.scopes[key] = scope
        # the head stage validated the query before this stage runs: its typed parameters are scoped here too
        self.query_kinds: dict[str, Kind] = parameter_kinds(op.get("parameters") or [], op.get(REFS_KEY)) \
            if self.contract and self.crs is not None else {}

    async def check(self, ctx: RequestContext) -> Decision:
        body = ctx.body or b""
        if not body:
            return self.allow
        kind, params = media_type(ctx.header("content-type"))
        key = match_media(kind, self.content) if self.contract else None
        schema, validator = self.schemas.get(key, (None, None)) if key else (None, None)
        try:
            if is_json(kind):
                return self._json(ctx, body, validator, self.scopes.get(key) if key else None)
            scope = self.scopes.get(key) if key else None
            if kind == "application/x-www-form-urlencoded":
                return self._form(ctx, body, schema, validator, scope)
            if kind == "multipart/form-data":
                return self._multipart(ctx, body, params.get("boundary", ""), schema, validator, scope)
            if self.crs is not None:
                return self._crs_other(ctx, self.crs, kind, body)
        except jsonbody.JsonError as exc:
            return self.invalid(exc.reason, exc.why, self._pid(exc.reason))
        except FormError as exc:
            return self.invalid(exc.reason, exc.why, self._pid(exc.reason))
        return self.allow

    def _pid(self, reason: str) -> str:
        return self.pid_limits if reason == "input_json_limits" else self.pid_contract

    def _json(self, ctx: RequestContext, body: bytes, validator: Any, scope: Scope | None = None) -> Decision:
        doc, members = jsonbody.parse_counted(body, self.limits)
        if validator is not None and not validator.is_valid(doc):
            deny, changed = self._validate(doc, validator)
            if deny is not None:
                return deny
            if changed:
                ctx.body = orjson.dumps(doc)
        # the received text holds every string of the document (strip mode only removes some): when it proves
        # that none can score, the per-string walk would find nothing
        if self.inspector is not None and not self.inspector.clean_json(body, members):
            deny = self._inspect_json(ctx, doc)
            if deny is not None:
                return deny
        if self.crs is not None:
            # API-aware scoping needs a validated document: the contract ran above, or there is no scope
            kinds = classify(doc, scope) if scope is not None and validator is not None else None
            if self.query_kinds:
                kinds = with_query(kinds or {}, self.query_kinds, ())
            return self.crs.run(ctx, crs.body_request(ctx, "json", body, doc=doc), kinds) or self.allow
        return self.allow

    def _crs_other(self, ctx: RequestContext, check: crs.CrsCheck, kind: str, body: bytes) -> Decision:
        """XML is inspected as `XML:/*` when the operation declares it, else refused (415): a body the CRS
        cannot see into must not pass as inspected. Other types get the CRS without a body processor."""
        if kind.endswith("/xml") or kind.endswith("+xml"):
            text = crs.xml_text(body) if match_media(kind, self.content) is not None else None
            if text is None:
                return Deny(415, "input_unsupported_media_type", self.pid_inspection,
                            "XML bodies are not accepted here.", log_detail="crs: undeclared or malformed XML")
            return check.run(ctx, crs.body_request(ctx, kind, body, xml_text=text)) or self.allow
        return check.run(ctx, crs.body_request(ctx, kind, body)) or self.allow

    def _inspect_json(self, ctx: RequestContext, doc: Any) -> Deny | None:
        inspector = self.inspector
        if inspector is None:
            return None
        for value, path in jsonbody.strings(doc).items():
            finding = inspector.inspect(value)
            if finding is None:
                continue
            where = pointer(path)
            if self.excluded and self.is_excluded(f"body.{where}"):
                continue
            deny = self.report(ctx, f"body.{where}", f"request body at {where or '/'}", finding)
            if deny is not None:
                return deny
        return None

    def _validate(self, doc: Any, validator: Any) -> tuple[Deny | None, bool]:
        """Reject the first error, or strip undeclared properties (then the rest must be valid).

        A real error is reported before undeclared properties: when a `oneOf` fails, no branch evaluated the
        declared properties either, and stripping them would hide the cause."""
        changed = False
        for _ in range(16):  # each round strips one more level of nesting at most
            errors = list(validator.iter_errors(doc))
            if not errors:
                return None, changed
            others = [e for e in errors if not undeclared_names(e)]
            if others or self.policy.undeclared != "strip":
                return self._deny(others[0] if others else errors[0]), changed
            # deepest first: an undeclared property inside an `allOf` branch fails that branch, and then every
            # property the branch declares looks undeclared one level up; strip only what nothing lies under
            found = [(tuple(e.instance_path), undeclared_names(e)) for e in errors]
            for path, names in found:
                if not any(len(q) > len(path) and q[:len(path)] == path for q, _ in found):
                    jsonbody.remove(doc, list(path), names)
            changed = True
        return self._deny(errors[0]), changed

    def _deny(self, error: Any) -> Deny:
        where = pointer(list(error.instance_path)) or "/"
        names = undeclared_names(error)
        if names:
            first = pointer([*error.instance_path, names[0]])
            return Deny(400, "input_undeclared_field", self.pid_undeclared,
                        f"The request body property {first} is not declared by this operation.")
        return self.invalid("input_invalid_body", f"The request body at {where} {explain(error)}.")

    def _form(self, ctx: RequestContext, body: bytes, schema: Any, validator: Any,
              scope: Scope | None = None) -> Decision:
        pairs = parse_form(body, self.policy.max_form_fields)
        if validator is not None:
            props = schema.get("properties", {}) if isinstance(schema, dict) else {}
            doc: dict[str, Any] = {}
            for name, value in pairs:
                if name in doc and _kind(props.get(name)) != "array":
                    return self.invalid("input_invalid_body", f"The form field '{name}' must be sent once.")
                if _kind(props.get(name)) == "array":
                    doc.setdefault(name, []).append(value)
                else:
                    doc[name] = value
            doc = coerce(doc, schema)
            if not validator.is_valid(doc):
                deny, changed = self._validate(doc, validator)
                if deny is not None:
                    return deny
                if changed:
                    pairs = [(k, v) for k, v in pairs if k in doc]
                    ctx.body = encode_form(pairs)
        values = [(f"body./{k}", f"form field '{k}'", v) for k, v in pairs]
        values += [(f"body./{k}", f"form field name '{k}'", k) for k, _ in pairs]  # names are input too
        deny = self.inspect(ctx, values)
        if deny is None and self.crs is not None:
            form = crs.form_pairs(body, self.policy.max_form_fields)
            # API-aware scoping needs the validated fields: the contract ran above, or there is no scope
            names = [k for k, _ in form]
            kinds = form_kinds(names, scope) if scope is not None and validator is not None else None
            if self.query_kinds:
                kinds = with_query(kinds or {}, self.query_kinds, names)
            deny = self.crs.run(ctx, crs.body_request(ctx, "form", body, form=form), kinds)
        return deny or self.allow

    def _multipart(self, ctx: RequestContext, body: bytes, boundary: str, schema: Any,
                   validator: Any, scope: Scope | None = None) -> Decision:
        parts = parse_multipart(body, boundary, self.policy.max_form_fields, self.policy.max_part_bytes,
                                self.policy.max_part_head_bytes)
        texts: list[tuple[str, str]] = []
        doc: dict[str, Any] = {}
        for part in parts:
            if part.filename is None and part.content_type.startswith("text/"):
                try:
                    value = part.data.decode("utf-8")
                except UnicodeDecodeError:
                    return self.invalid("input_invalid_body", f"The form field '{part.name}' is not valid UTF-8.")
                texts.append((part.name, value))
                doc[part.name] = value
            else:
                doc[part.name] = ""  # a file: its presence is checked, not its bytes
        if validator is not None:
            doc = coerce(doc, schema)
            if not validator.is_valid(doc):
                error = next(iter(validator.iter_errors(doc)))
                return self._deny(error)  # multipart is never rewritten: undeclared parts are rejected
        values = [(f"body./{k}", f"form field '{k}'", v) for k, v in texts]
        # file names and parts of any declared type are input too (the multipart gap)
        values += [(f"body./{p.name}", f"file name of '{p.name}'", p.filename) for p in parts if p.filename]
        values += [(f"body./{p.name}", f"form field '{p.name}'", p.data.decode("utf-8", "replace"))
                   for p in parts if p.filename is None and not p.content_type.startswith("text/")]
        deny = self.inspect(ctx, values)
        if deny is None and self.crs is not None:
            crs_parts = [CrsPart(p.name, p.filename, "" if p.filename else p.data.decode("utf-8", "replace"))
                         for p in parts]
            # only text parts were validated against the schema: a name also used by a file or a non-text
            # part (whose bytes nothing validated) stays free text
            unchecked = {p.name for p in parts if p.filename is not None or not p.content_type.startswith("text/")}
            names = [name for name, _ in texts if name not in unchecked]
            kinds = form_kinds(names, scope) if scope is not None and validator is not None else None
            if self.query_kinds:
                kinds = with_query(kinds or {}, self.query_kinds, [p.name for p in parts])
            deny = self.crs.run(ctx, crs.body_request(ctx, "multipart", body, parts=crs_parts), kinds)
        return deny or self.allow


def _kind(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "scalar"
    kind = schema.get("type")
    return "array" if kind == "array" or (isinstance(kind, list) and "array" in kind) else "scalar"


def build_head(policy: InputPolicy, route: RouteInfo, shared: InputShared | None) -> HeadStage | None:
    """The head stage, or None when neither the contract nor inspection applies to the route."""
    if (policy.contract == "off" or route.operation is None) and policy.inspection == "off":
        return None
    return HeadStage(policy, route, shared)


def build_body(policy: InputPolicy, route: RouteInfo, shared: InputShared | None) -> BodyStage | None:
    """The body stage, or None for routes whose methods carry no body and no declared requestBody."""
    op = route.operation or {}
    if route.methods <= _NO_BODY_METHODS and not op.get("requestBody"):
        return None
    if policy.contract == "off" and policy.inspection == "off":
        return None  # the JSON limits belong to the contract: with both off the body is streamed untouched
    return BodyStage(policy, route, shared)


__all__ = ["BodyStage", "HeadStage", "InputShared", "build_body", "build_head", "prepare"]
