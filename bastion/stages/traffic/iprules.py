"""IP rules: allow and deny networks (IPv4 and IPv6), checked on `ctx.client_ip` before identity.

`ctx.client_ip` is the connection's peer, or the address from forwarding headers only when the peer is a
trusted proxy (the server resolves it). Deny wins over allow. An address that does not parse is refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from bastion.context import Continue, Decision, Deny, RequestContext

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetworkSet:
    """Networks compiled to (mask, prefix) integer pairs per IP version: a membership test is a few ANDs."""

    __slots__ = ("v4", "v6")

    def __init__(self, networks: Iterable[Network | str]) -> None:
        self.v4: list[tuple[int, int]] = []
        self.v6: list[tuple[int, int]] = []
        for item in networks:
            net = ipaddress.ip_network(item) if isinstance(item, str) else item
            bucket = self.v4 if net.version == 4 else self.v6
            bucket.append((int(net.netmask), int(net.network_address)))

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def contains(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        value = int(address)
        bucket = self.v4 if address.version == 4 else self.v6
        return any(value & mask == prefix for mask, prefix in bucket)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client address, IPv4-mapped IPv6 (`::ffff:192.0.2.1`) as IPv4; None when it does not parse."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # a zone id never changes the rule
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class NetworkRules:
    """An allow list and a deny list; `permits(ip)` is what both the IP stage and consumer networks use."""

    __slots__ = ("allow", "allow_all", "deny")

    def __init__(self, allow: Iterable[Network | str] | None, deny: Iterable[Network | str] = ()) -> None:
        nets = None if allow is None else [ipaddress.ip_network(n) if isinstance(n, str) else n for n in allow]
        # `0.0.0.0/0` and `::/0` together (the default) allow everyone: skip the lookup
        self.allow_all = nets is None or {n.version for n in nets if n.prefixlen == 0} == {4, 6}
        self.allow = NetworkSet(nets or ())
        self.deny = NetworkSet(deny)

    def verdict(self, client_ip: str) -> str | None:
        """None when permitted, else the reason code: `ip_denied`, `ip_not_allowed` or `ip_invalid`."""
        address = parse_ip(client_ip)
        if address is None:
            return "ip_invalid"
        if self.deny and self.deny.contains(address):
            return "ip_denied"
        if not self.allow_all and not self.allow.contains(address):
            return "ip_not_allowed"
        return None


class IpRulesStage:
    """`ip: {allow: [...], deny: [...]}` on a route: 403 when the client address is not permitted."""

    control = "traffic.ip"
    needs_body = False

    def __init__(self, rules: NetworkRules, policy_id: str) -> None:
        self.rules = rules
        self.policy_id = policy_id
        self._allow = Continue(policy_id)

    async def check(self, ctx: RequestContext) -> Decision:
        reason = self.rules.verdict(ctx.client_ip)
        if reason is None:
            return self._allow
        return Deny(403, reason, self.policy_id, detail="Requests from this network are not allowed.",
                    log_detail=f"client address {ctx.client_ip!r}: {reason.replace('_', ' ')}")


def consumer_networks_decision(ctx: RequestContext, networks: dict[str, NetworkRules],
                               policy_id: str) -> Deny | None:
    """For the identity stage (or any later one): a partner consumer may only call from its own networks.

    `networks` maps a consumer name to its rules (build it once per config load with `NetworkRules(allow,
    deny)`); a consumer without an entry is not restricted. Returns a 403 Deny (`consumer_ip_not_allowed`,
    `consumer_ip_denied`) or None.
    """
    identity = ctx.identity
    if identity is None or identity.consumer is None:
        return None
    rules = networks.get(identity.consumer)
    if rules is None:
        return None
    reason = rules.verdict(ctx.client_ip)
    if reason is None:
        return None
    code = "consumer_" + reason
    return Deny(403, code, policy_id, detail="This consumer may not call from this network.",
                log_detail=f"consumer {identity.consumer!r} from {ctx.client_ip!r}: {reason.replace('_', ' ')}")
