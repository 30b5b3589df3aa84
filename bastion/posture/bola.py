"""The BOLA attack (OWASP API1:2023): another caller's object id on routes with owner rules.

For a route whose effective policy has `authz.owner` rules on path, query or header ids bound to the token
(`equals: claim:<path>`, `in: claim:<path>`, `equals: subject`), the probe picks an object id A for every rule
and mints a valid probe token whose claims name A. Two requests follow:

- `valid_probe_token`: the probe asks for its own object A (GET/HEAD only). It must be accepted: a gateway that
  answers 403 to everything would otherwise pass the BOLA attack without any owner rule doing its job.
- `bola:<source>` (one per rule): the same token, with that rule's id replaced by B, a different id of the same
  shape (`1` -> `2`, `probe` -> `probf`, a UUID with another last digit). Expected: 403.

Rules the probe cannot satisfy with its own token (an ownership `lookup`, `consumer`, `consumer_tenant`, a
registered claim such as `iss`) make the route's owner check a SKIP with the reason; body rules are not probed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from bastion.compile import CompiledRoute, Plan
from bastion.posture.controls import section

# claims the forge sets itself: an owner rule bound to one of them cannot name an object of the probe's choice
_REGISTERED = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti", "scope", "scp", "client_id"})


@dataclass(frozen=True, slots=True)
class Binding:
    """One owner rule the probe can satisfy: where the id goes, and which claim must name it."""

    source: str  # path.order_id
    kind: str  # path | query | header
    name: str
    claim: str | None  # dotted claim path; None: the token subject (`sub`)
    listed: bool  # `in:` (a list claim) rather than `equals:`
    own: str  # object A: named by the probe's token
    other: str  # object B: the same shape, not the probe's


@dataclass(frozen=True, slots=True)
class OwnerPlan:
    """The owner rules of a route as the probe will exercise them; `skip` says why it cannot."""

    bindings: tuple[Binding, ...] = ()
    skip: str = ""
    body_rules: tuple[str, ...] = ()  # sources of body rules (not probed)

    @property
    def active(self) -> bool:
        return bool(self.bindings or self.skip)

    def claims(self) -> dict[str, Any]:
        """Token claims that name the probe's own objects (nested for dotted claim paths)."""
        out: dict[str, Any] = {}
        for b in self.bindings:
            if b.claim is None:
                continue
            *parents, leaf = b.claim.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            if b.listed:
                node.setdefault(leaf, [])
                if b.own not in node[leaf]:
                    node[leaf].append(b.own)
            else:
                node[leaf] = b.own
        return out

    def path_values(self, attacked: Binding | None = None) -> dict[str, str]:
        return {b.name: _value(b, attacked) for b in self.bindings if b.kind == "path"}

    def query(self, attacked: Binding | None = None) -> str:
        return "&".join(f"{quote(b.name, safe='')}={quote(_value(b, attacked), safe='')}"
                        for b in self.bindings if b.kind == "query")

    def headers(self, attacked: Binding | None = None) -> tuple[tuple[str, str], ...]:
        return tuple((b.name, _value(b, attacked)) for b in self.bindings if b.kind == "header")


def _value(binding: Binding, attacked: Binding | None) -> str:
    return binding.other if binding == attacked else binding.own


def owner_plan(route: CompiledRoute, plan: Plan, subject: str, sample_value: Any) -> OwnerPlan:
    """The route's owner rules, with objects A and B chosen; `sample_value(kind, name)` gives a valid id."""
    authz = section(plan, "authz")
    rules = list(getattr(authz, "owner", None) or []) if authz is not None else []
    if not rules:
        return OwnerPlan()
    bindings: list[Binding] = []
    body: list[str] = []
    cannot: list[str] = []
    by_claim: dict[str | None, str] = {}  # `equals` rules on the same claim must name the same object
    for rule in rules:
        kind, _, name = rule.source.partition(".")
        if kind == "body":
            if not rule.optional:
                body.append(rule.source)
            continue
        ref = rule.equals or rule.within
        if ref is None:
            cannot.append(f"{rule.source} is decided by an ownership lookup")
            continue
        if ref == "subject" or ref == "claim:sub":
            claim = None
        elif ref.startswith("claim:") and ref[6:] not in _REGISTERED:
            claim = ref[6:]
        else:
            cannot.append(f"{rule.source} is bound to {ref}")
            continue
        listed = rule.within is not None
        if claim is None:
            own = subject
        elif not listed and claim in by_claim:
            own = by_claim[claim]
        else:
            own = str(sample_value(kind, name))
            taken = {b.own for b in bindings if b.claim == claim}
            while own in taken:  # two ids in one list claim: keep them distinct
                own = other_id(own)
        by_claim.setdefault(claim, own)
        bindings.append(Binding(rule.source, kind, name.lower() if kind == "header" else name, claim, listed,
                                own, ""))
    # B must be outside everything the token grants through that claim
    granted: dict[str | None, set[str]] = {}
    for b in bindings:
        granted.setdefault(b.claim, set()).add(b.own)
    done = []
    for b in bindings:
        other = other_id(b.own)
        while other in granted[b.claim]:
            other = other_id(other)
        done.append(replace(b, other=other))
    if body and not done and not cannot:
        return OwnerPlan(body_rules=tuple(body), skip="owner rules on body ids are not probed: "
                         + ", ".join(body))
    if cannot:
        return OwnerPlan(tuple(done), "the probe's token cannot own this object: " + "; ".join(cannot),
                         tuple(body))
    if body:
        return OwnerPlan(tuple(done), "a request without a body cannot satisfy the owner rules on "
                         + ", ".join(body), tuple(body))
    return OwnerPlan(tuple(done))


def other_id(value: str) -> str:
    """A different id of the same shape: the last digit or letter moves on (`1` -> `2`, `probe` -> `probf`)."""
    if not value:
        return "0"
    chars = list(value)
    for i in range(len(chars) - 1, -1, -1):
        c = chars[i]
        if c.isdigit():
            chars[i] = str((int(c) + 1) % 10)
        elif "a" <= c <= "z":
            chars[i] = chr((ord(c) - ord("a") + 1) % 26 + ord("a"))
        elif "A" <= c <= "Z":
            chars[i] = chr((ord(c) - ord("A") + 1) % 26 + ord("A"))
        else:
            continue
        return "".join(chars)
    return value + "0"
