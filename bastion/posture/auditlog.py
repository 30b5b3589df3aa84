"""Reading audit events (JSON lines, OCSF API Activity) back for reports and the inventory."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """The fields of one request event that posture needs."""

    time: float  # epoch seconds
    path: str
    method: str
    api: str | None
    route: str | None
    decision: str  # allow | deny
    reason: str | None
    control: str | None  # the control that denied (None when allowed)
    client_ip: str | None
    caller: str | None  # consumer name, else subject, else None
    probe: bool = False  # the probe's own traffic (ProbeMarks), left out of denials and the inventory


@dataclass(frozen=True, slots=True)
class ProbeMarks:
    """How the readers recognise `bastion probe` traffic in the audit log, from what the gateway verified.

    - `subjects`: the verified token subject (`unmapped.bastion.subject`, set only once identity accepted the
      token), e.g. `bastion-probe`. This covers the probe's requests with its valid token (scope, owner, input
      and body attacks); requests with no or a forged token have no verified subject and are not covered.
    - `sources`: client networks (the address the gateway computed, after `trusted_proxies`), e.g. the CI
      runner's address. This covers every probe request, forged tokens included, and everything else that
      comes from there.

    Nothing the client merely claims (User-Agent, a header) marks an event: anyone could hide behind it.
    """

    subjects: frozenset[str] = frozenset()
    sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def of(cls, subjects: Iterable[str] = (), sources: Iterable[str] = ()) -> ProbeMarks:
        return cls(frozenset(subjects), tuple(ipaddress.ip_network(s, strict=False) for s in sources))

    def match(self, subject: Any, client_ip: Any) -> bool:
        if isinstance(subject, str) and subject in self.subjects:
            return True
        if self.sources and isinstance(client_ip, str):
            try:
                address = ipaddress.ip_address(client_ip)
            except ValueError:
                return False
            return any(address in network for network in self.sources)
        return False


NO_MARKS = ProbeMarks()


def read(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every event of a JSON-lines file; lines that are not JSON objects are skipped."""
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event


def requests(events: Iterable[dict[str, Any]], probe: ProbeMarks = NO_MARKS) -> Iterator[RequestEvent]:
    """The request events, flattened: API Activity (6003) and, for identity refusals, Authentication (3002)
    events that carry a request id; admin and protocol events are left out. `probe` marks the probe's own."""
    for event in events:
        bastion = (event.get("unmapped") or {}).get("bastion") or {}
        if "admin_action" in bastion or not bastion.get("request_id") or "decision" not in bastion:
            continue
        if (event.get("class_uid") not in (6003, 3002)) and not event.get("http_request"):
            continue
        http = event.get("http_request") or {}
        user = (event.get("actor") or {}).get("user") or {}
        decision = bastion.get("decision") or "allow"
        # "anonymous"/"unknown" (type_id 0) name nobody: such a caller is known by its address instead
        named = user.get("name") if user.get("type_id") != 0 else None
        caller = bastion.get("consumer") or named or bastion.get("subject") or user.get("uid")
        client_ip = (event.get("src_endpoint") or {}).get("ip") or bastion.get("client_ip")
        yield RequestEvent(
            time=float(event.get("time") or 0) / 1000.0,
            path=str((http.get("url") or {}).get("path") or bastion.get("path") or ""),
            method=str(http.get("http_method") or ""),
            api=bastion.get("api") or None,
            route=bastion.get("route") or None,
            decision=decision,
            reason=bastion.get("reason"),
            control=denying_control(event) if decision == "deny" else None,
            client_ip=client_ip,
            caller=caller if isinstance(caller, str) and caller != "unknown" else None,
            probe=probe.match(bastion.get("subject"), client_ip),
        )


def denying_control(event: dict[str, Any]) -> str:
    """The control that refused: the deny record of the pipeline, else the policy id's last part."""
    bastion = (event.get("unmapped") or {}).get("bastion") or {}
    for record in bastion.get("decisions") or []:
        if isinstance(record, dict) and record.get("outcome") == "deny" and record.get("control"):
            return str(record["control"])
    policy = str((event.get("policy") or {}).get("uid") or "")
    if policy.startswith("gateway/"):
        return "gateway"  # unknown routes, framing, path normalisation
    last = policy.rsplit("/", 1)[-1]
    return last.split(".", 1)[0] if last else "unknown"
