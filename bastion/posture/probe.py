"""`bastion probe`: attack a running gateway with what each route's effective policy must refuse.

For every route of the config: no credential, forged tokens (alg none, a foreign key, HS256 keyed with the
issuer's public key), expired, not yet valid, wrong issuer, wrong audience, a token without the required scope,
an oversized body, a wrong content type, an undeclared body field, an injection payload, plaintext where TLS is
required, and (only with `--include-rate-limit`, as it spends quota) a burst past the rate limit. Each answer is
compared with the status the policy promises; any difference is a failure (exit 1).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastion.compile import CompiledGateway, compile_config
from bastion.config.loader import load_config
from bastion.posture.attacks import Attack, ProbeOptions, plan_route
from bastion.posture.client import Response, Target, send
from bastion.posture.credential import RegisteredCredential
from bastion.posture.tokens import ProbeIdentityConfig, TokenForge, credential_forge, forge_for


@dataclass(frozen=True, slots=True)
class Result:
    """What came back for one attack."""

    route: str
    attack: str
    control: str
    method: str
    path: str
    expected: int
    observed: int | None
    result: str  # pass | fail | skip
    detail: str = ""


def plan(compiled: CompiledGateway, forge: TokenForge | None, options: ProbeOptions) -> list[Attack]:
    hosts = {api.name: (api.hosts[0] if api.hosts else None) for api in compiled.config.model.apis}
    attacks: list[Attack] = []
    for route in compiled.routes:
        attacks += plan_route(route, 0, forge, options, hosts.get(route.info.api))
    return attacks


async def execute(attacks: list[Attack], target: Target, plain: Target | None, *, concurrency: int = 8,
                  timeout: float = 10.0) -> list[Result]:
    """Send every attack (bursts last, one at a time, so they do not starve the others)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(attack: Attack) -> Result:
        if attack.skip:
            return _result(attack, None, "skip", attack.skip)
        where = plain if attack.plaintext else target
        if where is None:
            return _result(attack, None, "skip", "no plaintext target")
        async with gate:
            responses = []
            for _ in range(attack.repeat):
                response = await send(where, attack.method, attack.path, list(attack.headers), attack.body,
                                      host=attack.host, timeout=timeout)
                responses.append(response)
                if response.status == attack.expected:
                    break
        return _judge(attack, responses)

    normal = [a for a in attacks if a.repeat == 1]
    bursts = [a for a in attacks if a.repeat > 1]
    results = dict(zip(map(id, normal), await asyncio.gather(*(one(a) for a in normal)), strict=True))
    for attack in bursts:
        results[id(attack)] = await one(attack)
    return [results[id(a)] for a in attacks]


def _judge(attack: Attack, responses: list[Response]) -> Result:
    last = responses[-1]
    if last.status == 0:
        return _result(attack, None, "fail", f"no HTTP answer: {last.error}")
    detail = _hint(last)
    if not attack.refusal:  # the probe's own valid token: anything but an identity/authz refusal
        accepted = last.status not in (401, 403)
        if accepted:
            return _result(attack, last.status, "pass", "accepted")
        if attack.control.startswith("authz.owner"):
            why = (f"the gateway refuses the probe its own object ({_hint(last) or last.status}): the BOLA "
                   "refusals prove nothing until its own object is allowed")
        else:
            why = "the gateway refuses the probe identity: the claim checks above prove nothing until it is accepted"
        return _result(attack, last.status, "fail", why)
    if attack.repeat > 1:
        detail = f"{len(responses)} request(s) sent; " + detail
    return _result(attack, last.status, "pass" if last.status == attack.expected else "fail", detail)


def _hint(response: Response) -> str:
    """What the answer says about who refused it (RFC 6750 error, or that the upstream answered)."""
    challenge = response.headers.get("www-authenticate", "")
    if "error=" in challenge:
        return challenge.split("error=", 1)[1].split(",", 1)[0].strip('"')
    if response.status < 400:
        return "reached the upstream"
    if "json" in response.headers.get("content-type", ""):  # the gateway's problem document (RFC 9457)
        try:
            detail = json.loads(response.body).get("detail")
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, str):
            return detail
    return ""


def _result(attack: Attack, observed: int | None, outcome: str, detail: str) -> Result:
    return Result(attack.route, attack.name, attack.control, attack.method, attack.path.split("?", 1)[0],
                  attack.expected, observed, outcome, detail)


def summary(results: list[Result]) -> dict[str, int]:
    return {k: sum(1 for r in results if r.result == k) for k in ("pass", "fail", "skip")}


def to_json(results: list[Result], *, target: str, config_hash: str, started: float,
            identity: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "bastion.probe", "version": 1, "target": target, "config_hash": config_hash,
            "time": started, "identity": identity or {"source": "none"}, "summary": summary(results),
            "results": [asdict(r) for r in results]}


def identity_line(doc: dict[str, Any]) -> str:
    """Who the probe was, in one line: a registered short-lived credential, a key file, or nobody."""
    who = doc.get("identity") or {}
    if who.get("source") == "registered":
        from bastion.posture.report import iso

        return (f"probe identity: a short-lived credential registered through the admin API at {who['admin']} "
                f"(provider {who['provider']}, trusted until {iso(float(who['expires']))})")
    if who.get("source") == "key_file":
        return f"probe identity: the key file {who['key']} (provider {who['provider']})"
    return "probe identity: none (forgeries only; attacks that need a valid token are skipped)"


def table(results: list[Result]) -> str:
    """Human-readable: one line per route and attack, failures marked."""
    rows = [("ROUTE", "ATTACK", "CONTROL", "EXPECTED", "OBSERVED", "RESULT", "DETAIL")]
    for r in results:
        rows.append((r.route, r.attack, r.control, str(r.expected or "not 401/403"),
                     "-" if r.observed is None else str(r.observed), r.result.upper(), r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:6])) + "  " + row[6] for row in rows]
    s = summary(results)
    lines.append(f"\n{s['pass']} passed, {s['fail']} failed, {s['skip']} skipped")
    return "\n".join(line.rstrip() for line in lines)


async def probe(config: str | Path, target_url: str, *, identity: ProbeIdentityConfig | None = None,
                credential: RegisteredCredential | None = None,
                plain_url: str | None = None, include_rate_limit: bool = False, max_burst: int = 1000,
                cafile: str | None = None, insecure: bool = False, timeout: float = 10.0) -> dict[str, Any]:
    """Probe the gateway at `target_url` against the effective policies of `config`; the JSON report. The
    probe signs valid tokens with `identity`'s key file or with a `credential` registered at the admin API."""
    compiled = compile_config(load_config(config), build_stages=False)
    target = Target.parse(target_url, cafile=cafile, insecure=insecure)
    plain = Target.parse(plain_url) if plain_url else (target if target.scheme == "http" else None)
    providers = compiled.config.model.providers.jwt
    who: dict[str, Any] = {"source": "none"}
    if credential is not None:
        forge: TokenForge | None = credential_forge(providers, credential)
        who = credential.describe()
    else:
        forge = forge_for(providers, identity, compiled.config.path.parent)
        if identity is not None:
            who = {"source": "key_file", "provider": identity.provider, "key": str(identity.key)}
    options = ProbeOptions(target_tls=target.scheme == "https", plaintext_available=plain is not None,
                           include_rate_limit=include_rate_limit, max_burst=max_burst)
    started = time.time()
    results = await execute(plan(compiled, forge, options), target, plain, timeout=timeout)
    return to_json(results, target=target.url, config_hash=compiled.config_hash, started=started, identity=who)


def results_of(doc: dict[str, Any]) -> list[Result]:
    return [Result(**r) for r in doc["results"]]


MAX_RESULTS = 20_000
_RESULT_FIELDS = {"route": str, "attack": str, "control": str, "method": str, "path": str, "result": str}


def checked_probe(doc: Any) -> dict[str, Any]:
    """A probe result posted to the admin API, checked before the report trusts it (ValueError otherwise)."""
    if not isinstance(doc, dict) or doc.get("kind") != "bastion.probe":
        raise ValueError("not a `bastion probe --json` result")
    results = doc.get("results")
    if not isinstance(results, list) or len(results) > MAX_RESULTS:
        raise ValueError(f"`results` must be a list of at most {MAX_RESULTS}")
    for r in results:
        if not isinstance(r, dict) or any(not isinstance(r.get(k), t) for k, t in _RESULT_FIELDS.items()) \
                or r["result"] not in ("pass", "fail", "skip"):
            raise ValueError("each result needs route, attack, control, method, path and result pass|fail|skip")
    if not isinstance(doc.get("time"), int | float):
        raise ValueError("`time` must be the epoch seconds of the run")
    return {"kind": "bastion.probe", "version": doc.get("version", 1), "target": str(doc.get("target", "")),
            "config_hash": str(doc.get("config_hash", "")), "time": float(doc["time"]),
            "identity": _identity(doc.get("identity")),
            "summary": {k: sum(r["result"] == k for r in results) for k in ("pass", "fail", "skip")},
            "results": results}


def _identity(who: Any) -> dict[str, Any]:
    """The posted `identity`, bounded: a few short fields, or "none"."""
    if not isinstance(who, dict):
        return {"source": "none"}
    return {str(k)[:40]: v if isinstance(v, int | float) else str(v)[:300] for k, v in list(who.items())[:8]}


def load_probe(path: str | Path) -> dict[str, Any]:
    doc = json.loads(Path(path).read_text())
    if doc.get("kind") != "bastion.probe":
        raise ValueError(f"{path} is not a `bastion probe --json` result")
    return dict(doc)
