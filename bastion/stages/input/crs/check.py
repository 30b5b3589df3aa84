"""The CRS as a check of the input stages: build the request as ModSecurity presents it, run the engine, and
turn 949110 into a 403-style refusal (400 here, like Bastion's own inspection) with an audit detail.

The audit detail names the rule ids, the anomaly score per category, the variables (`ARGS:json.user.name`),
the paranoia level and a bounded, redacted excerpt of each matched value; never the whole payload.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from typing import Any

from bastion.context import ControlRecord, Deny, RequestContext
from bastion.stages.input.config import CrsPolicy
from bastion.stages.input.crs.engine import Outcome
from bastion.stages.input.crs.request import CrsRequest, Pairs, Part, flatten_json, from_parts, parse_args
from bastion.stages.input.crs.ruleset import CrsEngine, crs_engine, load_ruleset
from bastion.stages.input.crs.scope import ATTACK_TAGS, DROP_RULES, KEEP_TAGS, Kind
from bastion.stages.input.crs.seclang import VarSpec, parse_variables

EXCERPT = 24
"""Characters of a matched value kept in the audit detail (the rest is elided)."""
MAX_XML_TEXT = 1 << 20
_CATEGORIES = ("sql_injection", "xss", "rce", "lfi", "rfi", "php_injection", "http_violation",
               "session_fixation")


class CrsCheck:
    """One route's CRS settings, compiled once: the engine and the route's governed removals."""

    def __init__(self, policy: CrsPolicy, block: bool, policy_id: str) -> None:
        self.engine: CrsEngine = crs_engine(policy.rules, policy.paranoia, policy.inbound_threshold)
        self.removed = tuple(policy.remove_rules)
        targets = []
        for item in policy.remove_targets:
            rule_id, sep, target = item.partition(";")
            if not sep or not target:
                raise ValueError(f"input.crs.remove_targets: {item!r} is not RULE_ID;TARGET")
            targets.append((rule_id.strip(), target.strip()))
            parse_variables(target.strip(), "input.crs.remove_targets", 0)  # a bad target fails validate, not requests
        self.removed_targets = tuple(targets)
        self.removed_tags = tuple(tag.strip() for tag in policy.remove_tags)
        if any(not tag for tag in self.removed_tags):
            raise ValueError("input.crs.remove_tags: an empty tag would remove nothing")
        self.block = block
        self.policy_id = policy_id
        self.api_aware = policy.api_aware

    def describe(self) -> dict[str, Any]:
        """For explain and the posture report: which rule set, its version and hash, what is skipped."""
        rs = self.engine.ruleset
        return {"rules": rs.directory, "version": rs.version, "sha256": rs.digest, "files": len(rs.files),
                "skipped_files": dict(rs.skipped), "paranoia": self.engine.paranoia,
                "inbound_threshold": self.engine.threshold, "removed": list(self.removed),
                "removed_targets": [f"{r};{t}" for r, t in self.removed_targets],
                "removed_tags": list(self.removed_tags)}

    def run(self, ctx: RequestContext, request: CrsRequest, kinds: dict[str, Kind] | None = None) -> Deny | None:
        """Evaluate; `kinds` (argument name -> contract kind) scopes the rules per field (scope.py)."""
        tag_targets = apply_scope(request, kinds) if kinds is not None and self.api_aware else None
        outcome = self.engine.evaluate(request, self.removed, self.removed_targets, tag_targets, self.removed_tags)
        if outcome.denied_by is None:
            return None
        detail = audit_detail(outcome, self.engine)
        if self.block:
            return Deny(400, "input_injection_crs", self.policy_id,
                        "The request was refused by content inspection.", log_detail=detail)
        ctx.records.append(ControlRecord("input.inspection", "detect", self.policy_id, "input_injection_crs"))
        return None


def apply_scope(request: CrsRequest, kinds: dict[str, Kind]) -> list[tuple[str, VarSpec]]:
    """Drop contract-typed arguments from the request's variables (their names too: the contract declares
    them) and the raw text of a validated JSON body, and return the rule families to switch off per
    content-typed argument (html, markdown, code)."""
    typed = {name for name, kind in kinds.items() if kind == "typed"}
    cols = request.collections
    # a contract-validated JSON or urlencoded body is inspected field by field, each as its contract says; its
    # raw text (REQUEST_BODY) would hand every field to every rule again. A multipart body keeps it: file
    # contents are in no argument.
    if any(name.startswith("json") for name in kinds) \
            or request.scalars.get("REQBODY_PROCESSOR") in ("JSON", "URLENCODED"):
        request.scalars.pop("REQUEST_BODY", None)
    if typed:
        for collection in ("ARGS", "ARGS_GET", "ARGS_POST"):
            cols[collection] = [(k, v) for k, v in cols.get(collection, []) if k not in typed]
    for collection in ("ARGS_NAMES", "ARGS_GET_NAMES", "ARGS_POST_NAMES"):
        cols[collection] = [(k, v) for k, v in cols.get(collection, []) if k not in kinds]
    out: list[tuple[str, VarSpec]] = []
    for name, kind in kinds.items():
        if kind in KEEP_TAGS:
            out += [(tag, VarSpec("ARGS", name)) for tag in ATTACK_TAGS if tag not in KEEP_TAGS[kind]]
            out += [(rule_id, VarSpec("ARGS", name)) for rule_id in DROP_RULES.get(kind, ())]
    return out


def ruleset_digests(policies: Iterable[CrsPolicy]) -> list[str]:
    """The version and file hash of every CRS directory the routes load, for the config hash (a changed rule
    file changes what runs, so it changes the hash); unreadable ones are validate's business."""
    out: set[str] = set()
    for policy in policies:
        if policy.enabled:
            try:
                rs = load_ruleset(policy.rules)
            except ValueError:
                continue
            out.add(f"{rs.version}:{rs.digest}")
    return sorted(out)


def explain(policy: CrsPolicy) -> list[str]:
    """`bastion explain` lines for a route's CRS setting: rule set version and hash, level, what is off."""
    if not policy.enabled:
        return []
    try:
        rs = load_ruleset(policy.rules)
    except ValueError as exc:  # validate reports it; explain still shows the setting
        return [f"crs: {policy.rules}: {exc}"]
    lines = [f"crs: {rs.version} sha256:{rs.digest} ({len(rs.files)} files in {rs.directory}) paranoia "
             f"{policy.paranoia}, inbound threshold {policy.inbound_threshold}"]
    lines += [f"crs: not loaded {name}: {why}" for name, why in rs.skipped]
    if policy.remove_rules or policy.remove_targets or policy.remove_tags:
        lines.append(f"crs: removed rules {policy.remove_rules} targets {policy.remove_targets} tags "
                     f"{policy.remove_tags}")
    return lines


def audit_detail(outcome: Outcome, engine: CrsEngine) -> str:
    """`crs 3.3.4 pl1 score 15 (sql_injection=15) rules 942100@ARGS:q='1\\' union sel…' ...`"""
    scores = ",".join(f"{c}={outcome.score(c + '_score')}" for c in _CATEGORIES if outcome.score(c + "_score"))
    hits = " ".join(f"{h.rule_id}@{h.variable}={_excerpt(h.value)!r}" for h in outcome.hits[:16]
                    if h.rule_id != outcome.denied_by)
    return (f"crs {engine.ruleset.version} {engine.ruleset.digest} pl{engine.paranoia} "
            f"score {outcome.score('anomaly_score')} ({scores}) rules {hits}")


def _excerpt(value: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in value[:EXCERPT])
    return text + ("…" if len(value) > EXCERPT else "")


def head_request(ctx: RequestContext) -> CrsRequest:
    """A request without a body (or whose body stage does not run)."""
    return from_parts(ctx.method, ctx.raw_target, "1.1", ctx.headers, remote_addr=ctx.client_ip)


def body_request(ctx: RequestContext, kind: str, body: bytes, *, form: Pairs | None = None,
                 doc: Any = None, parts: list[Part] | None = None, xml_text: Pairs | None = None) -> CrsRequest:
    """A request with its parsed body: form pairs, a JSON document, multipart parts or XML text."""
    if doc is not None:
        return from_parts(ctx.method, ctx.raw_target, "1.1", ctx.headers, remote_addr=ctx.client_ip, body=body,
                          processor="JSON", body_args=flatten_json(doc))
    if parts is not None:
        return from_parts(ctx.method, ctx.raw_target, "1.1", ctx.headers, remote_addr=ctx.client_ip, body=body,
                          processor="MULTIPART", parts=parts)
    if form is not None:
        return from_parts(ctx.method, ctx.raw_target, "1.1", ctx.headers, remote_addr=ctx.client_ip, body=body,
                          processor="URLENCODED", body_args=form)
    req = from_parts(ctx.method, ctx.raw_target, "1.1", ctx.headers, remote_addr=ctx.client_ip, body=body,
                     processor="XML" if xml_text is not None else "")
    if xml_text is not None:
        req.collections["XML"] = xml_text
    return req


def form_pairs(body: bytes, limit: int) -> Pairs:
    """An urlencoded body as ModSecurity's URLENCODED processor names it (names are inspected too)."""
    return parse_args(body.decode("utf-8", "replace"), limit)


def xml_text(body: bytes) -> Pairs | None:
    """`XML:/*`: every text node and attribute value, or None when the body is not well-formed XML."""
    if len(body) > MAX_XML_TEXT or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return None  # no DTDs: entity expansion is refused outright, not bounded
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    out: Pairs = []
    for element in root.iter():
        out += [("/*", v) for v in element.attrib.values()]
        if element.text and element.text.strip():
            out.append(("/*", element.text))
        if element.tail and element.tail.strip():
            out.append(("/*", element.tail))
    return out
