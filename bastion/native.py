"""The optional mypyc build: which modules it compiles, and whether this process runs them compiled.

`make install` compiles the modules below in place (a `.so` beside each `.py`, built by
scripts/build_compiled.py); `make install-pure` or `BASTION_PURE=1` leaves them pure Python. Python's import
system prefers an extension module over the source file beside it, so a compiled module replaces the pure one
without any switch in the code. Each module is listed with why it is compiled: it runs on every request and the
build measurably lowers its CPU (bench/RESULTS.md, "mypyc build").
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
from pathlib import Path

MODULES: tuple[str, ...] = (
    # the plain request path (bench/micro_core.py, every mode)
    "bastion.server.http1",  # client HTTP/1.1: httptools callbacks per header, the keep-alive loop
    "bastion.server.upstream",  # upstream HTTP/1.1: response parsing per header, the connection pool
    "bastion.server.body",  # request body buffering, limits and the idle deadline
    "bastion.server.flow",  # write flow control (pause/resume) of every response
    "bastion.server.proxy",  # Gateway.handle: route -> enforce -> forward -> render -> account, every request
    "bastion.server.response",  # ResponseSink: every upstream response head and body to the client
    "bastion.http.headers",  # header hygiene: every request and response header passes through it
    "bastion.http.budget",  # the head byte budget, taken per header line
    "bastion.http.framing",  # RFC 9112 framing checks on every request head
    "bastion.router",  # path split and route tree walk
    "bastion.pipeline",  # the stage loop of every enforcing route
    "bastion.context",  # RequestContext, Continue/Deny: built or read on every request
    "bastion.policy_ids",  # policy ids of every decision
    "bastion.forwarding",  # Forwarded/X-Forwarded-* for every upstream request
    "bastion.cache",  # the bounded LRU/TTL caches (block list, tokens) hit per request
    "bastion.audit.blocks",  # the block-list check of every request
    "bastion.audit.detect",  # the detectors' counters, fed by every request
    # identity chain (--jwt, --chain)
    "bastion.stages.identity.stage",  # credential extraction and the verified-token cache lookup
    "bastion.stages.identity.jwt",  # JWT checks on a cache miss, claims to identity
    "bastion.stages.identity.tokencache",  # the cache's class: subclasses bastion.cache's (must compile with it)
    "bastion.stages.identity.compact",  # a new token's split, base64url and JSON decoding (the uncached path)
    "bastion.stages.identity.signature",  # a new token's header types and ECDSA check on a prepared key
    "bastion.stages.authz.scopes",  # the required-scope check
    # rate limits (--limit, --chain)
    "bastion.stages.traffic.ratelimit",  # the limit stage: key, take, headers
    "bastion.stages.traffic.headers",  # RateLimit-* response headers
    "bastion.state.algorithms",  # sliding window / token bucket arithmetic
    "bastion.state.values",  # Hit and Outcome: one of each per limit charged
    # CRS inspection (input.inspection.crs; bench/micro_crs.py)
    "bastion.stages.input.crs.engine",  # the CRS transaction: the rule walk, values, setvar per rule
    "bastion.stages.input.crs.program",  # Rule/Program: their fields are read by every rule the walk visits
    "bastion.stages.input.crs.seclang",  # VarSpec/Marker: read by the walk and every value lookup
    # input contract (--full chain, contract routes)
    "bastion.stages.input.jsonbody",  # strict JSON: the shape walk over every JSON body
    # audit (gateway.audit): the OCSF event of every request, built by the writer on the same CPU
    "bastion.audit.events",
)
# Left pure, though on the request path (measured in bench/RESULTS.md, "mypyc build"):
# - server/exchange.py: ExchangeBase is the base of the HTTP/2 exchange (server/http2.py, pure) and of test
#   doubles; pure code cannot subclass a compiled class.
# - server/pool.py: mypyc rejects `continue` inside try/finally (the retry loop).
# - server/metrics.py: about 1 % of the plain GET; a test reads its source through `__file__`.
# - state/memory.py: MemoryState is weak-referenced; compiled classes have no `__weakref__`.
# - stages/input/crs/{transforms,operators,request}.py: compiled with the engine they cost more (bench/micro_crs.py
#   under callgrind: 4.65 M instructions per clean GET against 2.86 M with only engine and program compiled).
# - stages/authz/stage.py: tests build pipeline.Prepared with stand-ins for its AuthzShared, which compiled code
#   would refuse (a field typed with a compiled class is checked).
"""Dotted names of the compiled modules, one build group (scripts/build_compiled.py)."""

C_EXTENSIONS: tuple[tuple[str, str], ...] = (
    # libinjection over all of a CRS rule's values in one call (stages/input/crs/injection.py: hits_sqli)
    ("bastion.stages.input.crs._injection_any", "bastion/stages/input/crs/_injection_any.c"),
)
"""Hand-written C extension modules built with the group: (dotted name, C source relative to the repository).
Optional at run time: the code using one falls back to its pure form when it is not built (`make install-pure`)."""

GROUP = "bastion._native"
"""mypyc's shared library of the group, `bastion/_native__mypyc.*.so`: inside the package, so the editable
install's import path finds it (a top-level name, mypyc's default, would not be importable)."""

MANIFEST = Path(__file__).with_name("_native_manifest.txt")
"""Written by the build: `module sha256` per compiled module, so a source edited after the build is noticed."""


def source_path(module: str) -> Path:
    """The `.py` file of a listed module, from its dotted name."""
    return Path(__file__).parent.parent.joinpath(*module.split(".")).with_suffix(".py")


def digest(module: str) -> str:
    """SHA-256 of a module's source, as recorded in the manifest."""
    return hashlib.sha256(source_path(module).read_bytes()).hexdigest()


def is_compiled(module: str) -> bool:
    """Whether importing `module` loads a compiled extension (what the import system would pick, not a guess)."""
    spec = importlib.util.find_spec(module)
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


def recorded(manifest: Path = MANIFEST) -> dict[str, str]:
    """The manifest's `module -> sha256`; empty when there is none (a pure build, or one from before it)."""
    try:
        rows = [line.split() for line in manifest.read_text().splitlines()]
    except OSError:
        return {}
    return {fields[0]: fields[1] for fields in rows if len(fields) == 2}


def changed(digests: dict[str, str]) -> list[str]:
    """Listed modules whose source no longer has the recorded digest."""
    return [module for module in MODULES if digests.get(module) != digest(module)]


def stale() -> list[str]:
    """Compiled modules whose source changed since the build: they run the old code until rebuilt."""
    return [module for module in changed(recorded()) if is_compiled(module)]


def build_label() -> str:
    """One line for `bastion --version`: which build this process runs."""
    compiled = sum(is_compiled(module) for module in MODULES)
    if compiled == 0:
        return "pure Python"
    label = f"compiled with mypyc: {compiled} of {len(MODULES)} hot-path modules"
    old = stale()
    if old:
        label += f"; STALE, rebuild with `make install`: {', '.join(old)}"
    return label
