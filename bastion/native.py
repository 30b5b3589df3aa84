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
    "bastion.http.headers",  # header hygiene: every request and response header passes through it
    "bastion.http.budget",  # head byte budget: taken per header line
    "bastion.http.framing",  # RFC 9112 framing checks on every request head
    "bastion.server.proxy",  # the request path: route, enforce, forward, render
    "bastion.server.upstream",  # upstream response parsing (httptools callbacks per header)
    # "bastion.server.http1",  # client HTTP/1.1 parsing callbacks
    "bastion.server.response",  # relaying the upstream response head and body
    "bastion.server.body",  # request body streaming and limits
    "bastion.server.flow",  # write flow control
    "bastion.server.metrics",  # per-request metric observation
    "bastion.cache",  # the bounded LRU/TTL caches hit per request
    "bastion.router",  # path split and route tree walk
    "bastion.pipeline",  # the stage loop
    "bastion.context",  # RequestContext and decisions
    "bastion.policy_ids",  # policy id builder
    "bastion.audit.detect",  # per-request detection counters
    "bastion.audit.blocks",  # block list check per request
    "bastion.forwarding",  # forwarded headers
    "bastion.stages.identity.tokencache",  # verified-token cache
)
"""Dotted names of the compiled modules, one build group (scripts/build_compiled.py)."""

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
