"""Config of an upstream pool: the list form of `upstream`, and the API's `load_balancing` section.

```yaml
upstream:
  - http://10.0.1.5:8080
  - {url: http://10.0.2.5:8080, weight: 2, zone: eu-west-1b}
load_balancing:
  policy: least_requests            # round_robin | least_requests | consistent_hash
  hash_on: client                   # consistent_hash: client | consumer | header:x-tenant
  local_zone: eu-west-1a            # prefer targets here while one is available
  health_check: {path: /healthz, interval: 5s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 3}
  outlier: {consecutive_5xx: 5, consecutive_connect_failures: 2, base_ejection: 10s, max_ejection: 5m}
  retry: {attempts: 2, budget_percent: 20, min_concurrency: 3}
  breaker: {max_connections: 512, max_pending: 64, retry_after: 1s}
```
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.base import Duration, Model

_URL = re.compile(r"^https?://[^/\s]+(/\S*)?$")


def check_url(value: str) -> str:
    if not _URL.match(value):
        raise ValueError("upstream must be an http:// or https:// URL")
    try:  # found by fuzz/loaders.py: `http://[127.0.0.1:9` or a port that is no number failed in compile
        url = urlsplit(value)
        if not url.hostname or url.port == 0:
            raise ValueError("no host or port 0")
    except ValueError as exc:
        raise ValueError(f"upstream is not a valid URL ({exc})") from None
    return value


class TargetConfig(Model):
    """One target of a pool: `{url: http://10.0.2.5:8080, weight: 2, zone: eu-west-1b}` (or just the URL)."""

    url: str = Field(description="`http://host:port`; every target of a pool has the same scheme and path.")
    weight: int = Field(1, ge=1, le=1000, description="Share of requests relative to the other targets.")
    zone: str | None = Field(None, description="Where the target runs; see `load_balancing.local_zone`.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)


class HealthCheckConfig(Model):
    """Active health checks: `GET path` on every target each `interval`."""

    path: str = Field("/healthz", description="Path probed with GET, e.g. `/healthz`.")
    interval: Duration = Field(5.0, gt=0, description="Time between two probes of one target.")
    timeout: Duration = Field(1.0, gt=0, description="A probe without a status line in this time failed.")
    healthy_threshold: int = Field(2, ge=1, description="Consecutive passes that bring a target back.")
    unhealthy_threshold: int = Field(2, ge=1, description="Consecutive failures that take a target out.")
    expected_status: tuple[int, int] = Field((200, 399), description="Passing status range, inclusive.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in " \r\n"):
            raise ValueError("a health check path starts with '/' and has no spaces")
        return value


class OutlierConfig(Model):
    """Passive outlier detection: a target that keeps failing real requests is ejected for a growing time."""

    consecutive_5xx: int = Field(5, ge=1, description="5xx answers (or timeouts) in a row that eject a target.")
    consecutive_connect_failures: int = Field(2, ge=1, description="Failed connects in a row that eject it.")
    base_ejection: Duration = Field(10.0, gt=0, description="First ejection; doubles with each next one.")
    max_ejection: Duration = Field(300.0, gt=0, description="Longest ejection (and longest Retry-After honoured).")
    max_ejected_percent: int = Field(50, ge=0, le=100, description="Never eject more of the pool than this "
                                     "(one target may always be ejected).")


class RetryConfig(Model):
    """Retries on another target: idempotent requests only (RFC 9110 §9.2.2), bounded by a budget."""

    attempts: int = Field(2, ge=1, le=5, description="Tries per request, the first included (1 = no retry).")
    budget_percent: float = Field(20.0, ge=0, le=100, description="Retries in flight as a share of requests "
                                  "in flight: retries cannot multiply the load on a failing pool.")
    min_concurrency: int = Field(3, ge=0, description="Retries always allowed in flight, whatever the share.")
    on_status: list[int] = Field(default_factory=lambda: [502, 503, 504],
                                 description="Upstream statuses retried (the answer is then dropped).")


class BreakerConfig(Model):
    """Circuit breaker per target: past these the target is skipped; with none left the answer is 503."""

    max_connections: int = Field(1024, ge=1, description="Requests in flight to one target.")
    max_pending: int = Field(128, ge=0, description="Requests waiting for a connection to one target.")
    retry_after: Duration = Field(1.0, ge=0, description="`Retry-After` of the 503 when every target is full.")


class LoadBalancingConfig(Model):
    """How an API with several upstream targets spreads, checks and retries its requests."""

    policy: Literal["round_robin", "least_requests", "consistent_hash"] = Field(
        "round_robin", description="Weighted round robin, fewest requests in flight, or a hash ring.")
    hash_on: str = Field("client", description="Key of `consistent_hash`: `client` (IP), `consumer` "
                         "(authenticated consumer or subject) or `header:<name>`.")
    local_zone: str | None = Field(None, description="Targets of this zone are preferred while one is up.")
    health_check: HealthCheckConfig | None = Field(None, description="Active probes; off unless set.")
    outlier: OutlierConfig = OutlierConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()

    @field_validator("hash_on")
    @classmethod
    def _key(cls, value: str) -> str:
        if value not in ("client", "consumer") and not re.match(r"^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$", value):
            raise ValueError("hash_on is `client`, `consumer` or `header:<name>`")
        return value.lower()

    @model_validator(mode="after")
    def _ejection(self) -> LoadBalancingConfig:
        if self.outlier.max_ejection < self.outlier.base_ejection:
            raise ValueError("`outlier.max_ejection` must be at least `outlier.base_ejection`")
        return self


UpstreamField = str | list[str | TargetConfig]
"""`upstream:` is one URL, or a list of targets (a pool)."""


def check_upstream(value: UpstreamField) -> UpstreamField:
    """One URL, or a pool of 1 to 64 distinct targets sharing scheme and path (a path differs per API, not
    per instance)."""
    if isinstance(value, str):
        return check_url(value)
    if not value or len(value) > 64:
        raise ValueError("a pool lists 1 to 64 targets")
    urls = [t if isinstance(t, str) else t.url for t in value]
    for url in urls:
        check_url(url)
    if len(set(urls)) != len(urls):
        raise ValueError("a target is listed twice")
    shapes = {(urlsplit(u).scheme, urlsplit(u).path.rstrip("/")) for u in urls}
    if len(shapes) > 1:
        raise ValueError("every target of a pool has the same scheme and path")
    return value


def targets_of(upstream: UpstreamField) -> list[TargetConfig]:
    """The targets of an `upstream` value: one for a URL."""
    if isinstance(upstream, str):
        return [TargetConfig(url=upstream)]
    return [TargetConfig(url=t) if isinstance(t, str) else t for t in upstream]
