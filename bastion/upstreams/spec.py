"""The compiled form of an API's pool: its targets and settings, hashable so a reload keeps an unchanged
pool's state (health, ejections) and replaces a changed one."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bastion.upstreams.config import LoadBalancingConfig, UpstreamField, targets_of


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One target: where it is and its share."""

    host: str
    port: int
    weight: int = 1
    zone: str | None = None

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """The targets of a pool and how they are balanced."""

    targets: tuple[TargetSpec, ...]
    settings: LoadBalancingConfig = field(compare=False)
    _key: str = ""  # the settings as JSON: what equality and the hash compare

    def __hash__(self) -> int:
        return hash((self.targets, self._key))


def pool_spec(upstream: UpstreamField, settings: LoadBalancingConfig | None) -> PoolSpec | None:
    """A pool for a list of targets, or for one URL with `load_balancing` set; None for a plain URL."""
    if isinstance(upstream, str) and settings is None:
        return None
    settings = settings or LoadBalancingConfig()
    targets = []
    for target in targets_of(upstream):
        url = urlsplit(target.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        targets.append(TargetSpec(url.hostname or "", port, target.weight, target.zone))
    return PoolSpec(tuple(targets), settings, settings.model_dump_json())
