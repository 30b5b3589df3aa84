"""`validate`: every TLS listener must meet the TLS demands of every class, API and route it serves.

Routes are served on every listener, and a handshake happens before the route is known, so a class that demands
TLS 1.3 (or fewer suites, one group, no resumption) is only honoured if no listener offers less. A class stricter
than a listener is an error at the class's field, naming the listener, rather than a policy silently not in force.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from bastion.stages.transport.config import DEFAULT_GROUPS, ListenerTlsSettings, TransportPolicy

Loc = tuple[str | int, ...]


def listener_conflicts(cfg: Any) -> list[tuple[Loc, str]]:
    """(location of the demanding field, message) for each demand some TLS listener does not meet."""
    listeners = [(i, lst.tls) for i, lst in enumerate(cfg.gateway.listeners) if lst.tls is not None]
    found: list[tuple[Loc, str]] = []
    for index, listener in enumerate(cfg.gateway.listeners):
        alpn = listener.tls.alpn if listener.tls is not None else None
        if alpn and "h2" in alpn and not listener.http2:  # ALPN would promise HTTP/2 to an HTTP/1.1 server
            found.append((("gateway", "listeners", index, "tls", "alpn"), "`alpn` offers h2 on a listener with "
                          "`http2: false`: remove h2 or enable http2"))
    revocation = cfg.gateway.revocation
    for loc, who, policy in _demands(cfg):
        if policy.revocation != "off" and not revocation.issuers:
            found.append(((*loc, "revocation"), f"{who} checks client-certificate revocation, but "
                          "gateway.revocation names no `issuers`: no CRL or OCSP answer could be trusted"))
        if policy.revocation != "off" and not (revocation.crls or revocation.ocsp):
            found.append(((*loc, "revocation"), f"{who} checks client-certificate revocation, but "
                          "gateway.revocation has no `crls` and `ocsp: false`"))
        for index, tls in listeners:
            for name, message in _unmet(policy, tls):
                found.append(((*loc, name), f"{who} demands {message}, but gateway.listeners[{index}] offers "
                              "less: tighten the listener's `tls:` (every route is served on every listener)"))
    return found


def _demands(cfg: Any) -> Iterator[tuple[Loc, str, TransportPolicy]]:
    for name, klass in cfg.classes.items():
        yield ("classes", name, "transport"), f"class {name!r}", klass.transport
    for a_index, api in enumerate(cfg.apis):
        klass = cfg.classes.get(api.klass)
        if klass is None:
            continue  # reported elsewhere
        api_loc: Loc = ("apis", a_index, "policy", "transport")
        layers: list[tuple[Loc, str, Any]] = [(api_loc, f"API {api.name!r}", api.policy.get("transport"))]
        layers += [(("apis", a_index, "routes", r_index, "policy", "transport"), f"route {api.name}/{route.name}",
                    route.policy.get("transport")) for r_index, route in enumerate(api.routes)]
        for loc, who, layer in layers:
            if isinstance(layer, dict) and layer:
                try:
                    yield loc, who, TransportPolicy.model_validate({**klass.transport.model_dump(), **layer})
                except ValidationError:
                    continue  # the route compiler reports the invalid value with its position


def _unmet(policy: TransportPolicy, tls: ListenerTlsSettings) -> Iterator[tuple[str, str]]:
    if tls.min_version < policy.min_tls:  # "1.2" < "1.3"
        yield "min_tls", f"TLS {policy.min_tls} or later"
    if tls.min_version == "1.2":  # the TLS 1.2 suites only matter while 1.2 is accepted
        extra = [c for c in tls.ciphers if c not in policy.ciphers]
        if extra:
            yield "ciphers", f"only the suites {policy.ciphers} (not {extra})"
    offered = tls.groups or list(DEFAULT_GROUPS)
    if any(g not in policy.groups for g in offered):
        yield "groups", f"only the key-exchange groups {policy.groups} (not {offered})"
    # TLS 1.2 resumes by session id whatever the tickets (Python's ssl cannot disable the cache): only a 1.3
    # listener without tickets never resumes
    if not policy.session_resumption and (tls.session_tickets or tls.min_version != "1.3"):
        yield "session_resumption", "no session resumption (`session_tickets: false` and `min_version: \"1.3\"`)"
