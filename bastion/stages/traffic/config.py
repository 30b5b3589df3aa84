"""Config models of the traffic layer: rate limits, quotas, IP rules, concurrency, and the size and time
limits the data plane enforces itself.

```yaml
traffic:
  rate_limits:
    - {name: per-consumer, algorithm: sliding_window, limit: 600, window: 1m, key: consumer}
    - {name: burst, algorithm: token_bucket, rate: 20, burst: 40, key: consumer+route}
    - {name: free-per-consumer, limit: 60, window: 1m, key: consumer, tiers: [free]}   # only tier `free`
  quotas: [{name: partner-plan, limit: 100000, period: month}]
  on_state_error: closed
  ip: {allow: [10.0.0.0/8, "2001:db8::/32"], deny: [10.66.0.0/16]}
  max_concurrent: 64
```
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from bastion.config.base import Duration, Model, Size, control

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_DIMENSION = re.compile(r"^(consumer|credential|client_ip|route|api|class|claim:[A-Za-z0-9_.:/-]+|"
                        r"header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TierName = Annotated[str, StringConstraints(pattern=_NAME)]

_TIERS_DESCRIPTION = (
    "Consumer tiers this applies to (a consumer's `tier:`), e.g. `tiers: [free, trial]`; empty (default): "
    "every caller. A tier limit is charged on top of the untiered ones, never instead of them.")


def _check_tiers(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError(f"tiers {value!r} names a tier twice")
    return value


def _check_key(value: str) -> str:
    parts = value.split("+")
    for part in parts:
        if not _DIMENSION.match(part):
            raise ValueError(
                f"unknown key dimension {part!r}: use consumer, credential, client_ip, route, api, class, "
                "claim:<path> or header:<name>, joined with '+' (e.g. `consumer+route`)")
    if len(set(parts)) != len(parts):
        raise ValueError(f"key {value!r} names a dimension twice")
    return "+".join(p.lower() if p.startswith("header:") else p for p in parts)


# The counter key and the tier list of a rate limit or a quota, checked the same way in both.
CounterKey = Annotated[str, AfterValidator(_check_key)]
Tiers = Annotated[list[TierName], AfterValidator(_check_tiers)]


class RateLimit(Model):
    """One limit, counted per value of `key`.

    ```yaml
    - {name: per-consumer, algorithm: sliding_window, limit: 600, window: 1m, key: consumer}
    - {name: login-burst, algorithm: token_bucket, rate: 5, burst: 10, key: client_ip, cost: 1}
    ```
    Limits with the same `name` and the same parameters share one counter wherever they apply.
    """

    name: str = Field(pattern=_NAME, description="Names the limit in headers, audit events and counters.")
    algorithm: Literal["token_bucket", "sliding_window"] = Field(
        "sliding_window",
        description="`sliding_window`: at most `limit` per `window`, no double quota at a window edge. "
        "`token_bucket`: a sustained `rate` per second with bursts up to `burst`.",
    )
    limit: int | None = Field(None, ge=1, description="Units per `window` (e.g. `limit: 100, window: 1m`).")
    window: Duration | None = Field(None, gt=0, description="Length of the window (e.g. `1m`, `10s`, `1h`).")
    rate: float | None = Field(None, gt=0, description="Token bucket: units per second refilled (e.g. `5`).")
    burst: int | None = Field(None, ge=1, description="Token bucket: the most units at once (e.g. `10`).")
    key: CounterKey = Field(
        "consumer",
        description="What is counted separately: consumer, credential, client_ip, route, api, class, "
        "claim:<path> (e.g. `claim:org.id`) or header:<name>, or several joined by '+' "
        "(`consumer+route`). Without an identity, consumer/credential/claim/header count per client IP.",
    )
    cost: int = Field(1, ge=1, description="Units one request uses (an expensive route may cost 5).")
    lease: int = Field(
        0, ge=0,
        description="With a shared (Redis) state, take up to this many units at once and spend them locally "
        "(fewer round trips, bounded over-admission, see docs/traffic.md). 0 = off.",
    )
    tiers: Tiers = Field(default_factory=list, description=_TIERS_DESCRIPTION)

    @model_validator(mode="after")
    def _shape(self) -> RateLimit:
        if self.algorithm == "sliding_window":
            if self.limit is None or self.window is None or self.rate is not None or self.burst is not None:
                raise ValueError("a sliding_window limit needs `limit` and `window` (not rate/burst)")
        elif (self.rate is None) != (self.burst is None) or (self.rate is None) == (self.limit is None):
            raise ValueError("a token_bucket limit needs `rate` and `burst`, or `limit` and `window`")
        elif self.limit is not None and self.window is None:
            raise ValueError("a token_bucket limit with `limit` needs `window`")
        if self.cost > self.capacity:
            raise ValueError(f"cost {self.cost} is above the limit's capacity {self.capacity}: never admitted")
        return self

    @property
    def capacity(self) -> int:
        """Units available at once: `limit` (window) or `burst` (bucket)."""
        return int(self.burst if self.burst is not None else self.limit or 0)

    @property
    def period(self) -> float:
        """The window, or for a bucket the time to refill from empty to full."""
        if self.burst is not None and self.rate is not None:
            return self.burst / self.rate
        return float(self.window or 0)


class Quota(Model):
    """A longer-period allowance per consumer (partner plans), on calendar periods in UTC.

    `{name: partner-plan, limit: 100000, period: month}`
    """

    name: str = Field(pattern=_NAME)
    limit: int = Field(ge=1, description="Units per period.")
    period: Literal["day", "month"] = Field(description="A UTC calendar day or month.")
    key: CounterKey = Field("consumer", description="Counted per this key (as in rate limits); usually `consumer`.")
    cost: int = Field(1, ge=1)
    tiers: Tiers = Field(default_factory=list, description=_TIERS_DESCRIPTION)


class IpRules(Model):
    """`ip: {allow: [10.0.0.0/8, "2001:db8::/32"], deny: [10.66.6.0/24]}`: deny wins over allow."""

    allow: list[Network] = control(
        [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")], stricter="subset",
        description="Networks that may call (default: any). An empty list allows no one.",
    )
    deny: list[Network] = control(
        [], stricter="superset", description="Networks refused even inside `allow` (e.g. `[203.0.113.0/24]`).",
    )


class TrafficPolicy(Model):
    """`traffic: {max_body_bytes: 1MiB, upstream_timeout: 30s, rate_limits: [...], ip: {...}}`"""

    max_body_bytes: Size = control(
        1024 * 1024, stricter="lower",
        description="Largest request body accepted: a larger Content-Length gets 413 before reading; "
        "a chunked body gets 413 the moment it passes the limit (e.g. `max_body_bytes: 64KiB`).",
    )
    upstream_connect_timeout: Duration = control(
        5.0, stricter="lower", description="Connecting to the upstream (502 after, e.g. `5s`).",
    )
    upstream_timeout: Duration = control(
        30.0, stricter="lower", description="Waiting for the upstream's response headers (504 after).",
    )
    rate_limits: list[RateLimit] = control(
        [], stricter="superset",
        description="Limits applied together to each request (429 when any is exhausted). A route may add "
        "limits; it keeps every limit of its class. A limit with `tiers:` applies only to consumers of those "
        "tiers, on top of the others (so a tier can only tighten).",
    )
    quotas: list[Quota] = control(
        [], stricter="superset", description="Per-day or per-month allowances (429 `quota_exceeded`).",
    )
    on_state_error: Literal["closed", "open_local"] = control(
        "closed", stricter="order", order=("open_local", "closed"),
        description="When the shared state (Redis) is unreachable: `closed` refuses with 503; `open_local` "
        "counts in this process only and raises an alert.",
    )
    rate_limit_headers: Literal["always", "on_deny", "never"] = control(
        "always", stricter="free",
        description="Send `RateLimit-Policy`/`RateLimit` on allowed responses too (`always`), only with 429 "
        "(`on_deny`), or not at all (`never`; `Retry-After` is always sent with 429).",
    )
    ip: IpRules = Field(
        default_factory=IpRules,
        description="Client networks allowed and denied (checked before identity). "
        "`ip: {allow: [10.0.0.0/8], deny: [10.9.0.0/16]}`",
    )
    max_concurrent: int | None = control(
        None, stricter="lower", ge=1,
        description="Most requests in flight on this route in this process (503 `concurrency_limit` above).",
    )

    @field_validator("rate_limits", "quotas")
    @classmethod
    def _unique(cls, value: list[RateLimit] | list[Quota]) -> list[RateLimit] | list[Quota]:
        names = [item.name for item in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"limit name {name!r} is used twice")
        return value
