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
temp dir and returns the headers and config fragment to use.
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

BENCH_DIR = Path(__file__).resolve().parent
POST_SCRIPT = BENCH_DIR / "post_1k.lua"
PAYLOAD_1K = BENCH_DIR / "payload_1k.json"

LISTEN_PORT = 18080
ADMIN_PORT = 19901
UPSTREAM_PORT = 18081
NGINX_PORT = 18082
NGINX_DEFAULTS_PORT = 18083

TARGETS = ("direct-upstream", "nginx", "nginx-defaults", "bastion")


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a scenario's `prepare` hook made: extra request headers and a config fragment."""

    headers: tuple[str, ...] = ()
    fragment: dict[str, Any] = field(default_factory=dict)


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
    # checked against the target: >= 60% of nginx's req/s and p99 within 2x of nginx's
    gated: bool = False
    prepare: Callable[[Path], Prepared] | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return (*(t for t in TARGETS if t in self.baselines), "bastion")

    @property
    def body(self) -> bytes | None:
        return self.body_file.read_bytes() if self.body_file else None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(name="get", section="core", path="/get", gated=True),
    Scenario(name="post-1k", section="core", path="/post", method="POST", script=POST_SCRIPT,
             body_file=PAYLOAD_1K, gated=True),
    # the same POST on a route that keeps the input section's secure default (injection inspection of every
    # JSON string, `block`): what a route of a class that does not opt out pays
    Scenario(name="post-1k-inspected", section="defaults", path="/post-inspected", method="POST",
             script=POST_SCRIPT, body_file=PAYLOAD_1K, route={"policy": {"input": {"inspection": "block"}}},
             baselines=("nginx",)),
)

SECTION_TITLES = {
    "core": "Core: plain proxy path (every control off)",
    "defaults": "Secure defaults: 1 KB JSON POST with the default input inspection (`inspection: block`)",
}

# The `open` class turns off every control that has an off switch: identity not required, no authorisation
# requirement, no rate limit, and the input contract and inspection off (both on by default), so that no stage
# buffers or parses the body. What remains is the proxy path itself.
OPEN_CLASS: dict[str, Any] = {
    "identity": {"required": False},
    "input": {"contract": "off", "inspection": "off"},
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
    """Deep-merge `extra` into a copy of `into`: mappings merge, lists append, scalars replace."""
    out = copy.deepcopy(into)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def route_entry(scenario: Scenario) -> dict[str, Any]:
    """The route of the `bench` API that serves a scenario."""
    return {"name": scenario.name, "path": scenario.path, "methods": [scenario.method], **scenario.route}


def bastion_config(
    scenarios: Iterable[Scenario], prepared: dict[str, Prepared] | None = None
) -> dict[str, Any]:
    """The `bastion.yaml` (as data) that serves every scenario given, with their fragments merged in."""
    prepared = prepared or {}
    config = copy.deepcopy(BASE_CONFIG)
    seen: dict[tuple[str, str], str] = {}
    for scenario in scenarios:
        key = (scenario.method, scenario.path)
        if key in seen:
            raise ValueError(f"scenarios {seen[key]!r} and {scenario.name!r} both use {key[0]} {key[1]}")
        seen[key] = scenario.name
        config["apis"][0]["routes"].append(route_entry(scenario))
        config = merge(config, scenario.fragment)
        if scenario.name in prepared:
            config = merge(config, prepared[scenario.name].fragment)
    return config


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
