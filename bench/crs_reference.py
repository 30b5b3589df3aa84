"""The two engines side by side on one request: libmodsecurity (ModSecurity v3, PyPI `libmodsecurity`) and
Bastion's CRS engine, loaded with the same CRS directory and the same setup.

Used by the differential test (tests/stages/input/crs/test_differential.py, a sample), the full corpus run
(bench/crs_differential.py) and the CPU benchmark (bench/micro_crs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_plus

import orjson

from bastion.stages.input.crs.request import CrsRequest, Part, flatten_json, from_parts, parse_args
from bastion.stages.input.crs.ruleset import DEFAULT_RULES_DIR, SKIPPED_FILES, CrsEngine, crs_engine


@dataclass(frozen=True)
class Request:
    """One HTTP request of a corpus."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    label: str = ""


def setup_rules(paranoia: int, threshold: int) -> str:
    """What Bastion's engine sets before the CRS (crs-setup.conf's role), as SecLang for ModSecurity."""
    return f"""SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 1310720
SecRule REQUEST_HEADERS:Content-Type "^application/json" \
  "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecAction "id:900000,phase:1,pass,nolog,setvar:tx.paranoia_level={paranoia},\
setvar:tx.inbound_anomaly_score_threshold={threshold},setvar:tx.crs_setup_version=334"
"""


class ModSecurity:
    """libmodsecurity with the CRS request rules (the files Bastion loads, in the same order)."""

    def __init__(self, paranoia: int = 1, threshold: int = 5, rules: Path = DEFAULT_RULES_DIR) -> None:
        import libmodsecurity  # a test/bench dependency only

        self._lib = libmodsecurity
        self.engine = libmodsecurity.ModSecurity()
        self.engine.set_log_callback(_quiet)  # the rule messages are read from the transaction instead
        self.rules = libmodsecurity.RulesSet()
        if self.rules.load(setup_rules(paranoia, threshold)) < 0:
            raise RuntimeError(self.rules.get_parser_error())
        for path in sorted(rules.glob("REQUEST-9*.conf")):
            if path.name in SKIPPED_FILES:
                continue
            if self.rules.load_from_uri(str(path)) < 0:
                raise RuntimeError(self.rules.get_parser_error())

    def run(self, req: Request) -> tuple[bool, frozenset[str]]:
        """(blocked, ids of the rules that logged a match)."""
        t = self._lib.Transaction(self.engine, self.rules)
        t.process_connection("127.0.0.1", 40000, "127.0.0.1", 80)
        t.process_uri(req.target, req.method, "1.1")
        for name, value in req.headers:
            t.add_request_header(name, value)
        t.process_request_headers()
        if req.body:
            t.append_request_body(req.body)
        t.process_request_body()
        intervention = t.intervention()
        ids = frozenset(str(m.rule_id) for m in t.get_rule_messages())
        return intervention is not None and intervention.status >= 400, ids


def _quiet(line: str) -> None:
    return None


class Bastion:
    """Bastion's engine, fed the request the way the input stages build it."""

    def __init__(self, paranoia: int = 1, threshold: int = 5, rules: Path = DEFAULT_RULES_DIR) -> None:
        self.engine: CrsEngine = crs_engine(str(rules), paranoia, threshold)

    def run(self, req: Request) -> tuple[bool, frozenset[str]]:
        outcome = self.engine.evaluate(crs_request(req))
        return outcome.denied_by is not None, frozenset(h.rule_id for h in outcome.hits)


def crs_request(req: Request) -> CrsRequest:
    """The body parsed as the input stage parses it (JSON, urlencoded, multipart), else no body processor."""
    kind = next((v for k, v in req.headers if k.lower() == "content-type"), "").split(";")[0].strip().lower()
    common = {"body": req.body}
    if kind == "application/json" and req.body:
        return from_parts(req.method, req.target, "1.1", req.headers, processor="JSON",
                          body_args=flatten_json(orjson.loads(req.body)), **common)
    if kind == "application/x-www-form-urlencoded" and req.body:
        return from_parts(req.method, req.target, "1.1", req.headers, processor="URLENCODED",
                          body_args=parse_args(req.body.decode("utf-8", "replace"), 1024), **common)
    if kind == "multipart/form-data" and req.body:
        return from_parts(req.method, req.target, "1.1", req.headers, processor="MULTIPART",
                          parts=_parts(req), **common)
    return from_parts(req.method, req.target, "1.1", req.headers, **common)


def _parts(req: Request) -> list[Part]:
    ctype = next(v for k, v in req.headers if k.lower() == "content-type")
    boundary = ctype.split("boundary=", 1)[1].strip('"')
    out = []
    for chunk in req.body.split(b"--" + boundary.encode())[1:-1]:
        head, _, data = chunk.strip(b"\r\n").partition(b"\r\n\r\n")
        disposition = next(line for line in head.decode().split("\r\n") if line.lower().startswith("content-disp"))
        fields = dict(p.strip().split("=", 1) for p in disposition.split(";")[1:] if "=" in p)
        name = unquote_plus(fields["name"].strip('"'))
        filename = fields["filename"].strip('"') if "filename" in fields else None
        out.append(Part(name, filename, "" if filename is not None else data.decode("utf-8", "replace")))
    return out
