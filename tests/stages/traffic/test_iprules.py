"""IP rules: allow and deny networks for IPv4 and IPv6, and consumer networks."""

from __future__ import annotations

import pytest

from bastion.context import Continue, Deny
from bastion.stages.traffic import build_ip_rules
from bastion.stages.traffic.iprules import IpRulesStage, NetworkRules, consumer_networks_decision
from tests.stages.traffic.support import ORDERS, policy, request

RULES = {"allow": ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"], "deny": ["10.66.0.0/16", "2001:db8:bad::/48"]}

# (client_ip, expected reason or None)
CASES = [
    ("10.1.2.3", None),
    ("192.0.2.200", None),
    ("10.66.1.1", "ip_denied"),  # deny wins over allow
    ("198.51.100.1", "ip_not_allowed"),
    ("2001:db8::1", None),
    ("2001:db8:bad::1", "ip_denied"),
    ("2001:db9::1", "ip_not_allowed"),
    ("::ffff:10.1.2.3", None),  # IPv4-mapped IPv6 is its IPv4 address
    ("::ffff:10.66.0.1", "ip_denied"),
    ("fe80::1%eth0", "ip_not_allowed"),
    ("not-an-ip", "ip_invalid"),
    ("", "ip_invalid"),
]


@pytest.mark.parametrize(("client_ip", "reason"), CASES)
async def test_ip_rules(client_ip: str, reason: str | None) -> None:
    stage = build_ip_rules(policy(ip=RULES), ORDERS, None)
    assert isinstance(stage, IpRulesStage)
    decision = await stage.check(request(ip=client_ip))
    if reason is None:
        assert isinstance(decision, Continue)
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (403, reason)
        assert decision.policy_id == "class:partner/orders/get-order/traffic.ip"
        assert not client_ip or client_ip not in (decision.detail or "")  # the address is in the log, not the problem


def test_no_stage_when_everyone_is_allowed() -> None:
    assert build_ip_rules(policy(), ORDERS, None) is None
    assert build_ip_rules(policy(ip={"allow": ["0.0.0.0/0"]}), ORDERS, None) is not None  # IPv6 refused


async def test_deny_only_and_empty_allow() -> None:
    deny_only = build_ip_rules(policy(ip={"deny": ["203.0.113.0/24"]}), ORDERS, None)
    assert deny_only is not None
    assert isinstance(await deny_only.check(request(ip="203.0.113.5")), Deny)
    assert isinstance(await deny_only.check(request(ip="2001:db8::1")), Continue)
    nobody = build_ip_rules(policy(ip={"allow": []}), ORDERS, None)
    assert nobody is not None
    assert isinstance(await nobody.check(request(ip="127.0.0.1")), Deny)


@pytest.mark.parametrize(("consumer", "client_ip", "reason"), [
    ("acme", "198.51.100.20", None),
    ("acme", "203.0.113.9", "consumer_ip_not_allowed"),
    ("acme", "198.51.100.66", "consumer_ip_denied"),
    ("globex", "203.0.113.9", None),  # no networks declared: not restricted
    (None, "203.0.113.9", None),
])
def test_consumer_networks(consumer: str | None, client_ip: str, reason: str | None) -> None:
    networks = {"acme": NetworkRules(["198.51.100.0/24"], ["198.51.100.66/32"])}
    ctx = request(ip=client_ip, consumer=consumer)
    deny = consumer_networks_decision(ctx, networks, "consumer:acme/networks")
    assert (deny.reason if deny else None) == reason
