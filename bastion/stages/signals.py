"""Client signals: IP reputation from operator CIDR lists, and country from a MaxMind-format database.

```yaml
gateway:
  signals:
    reputation: {scanners: lists/scanners.txt, tor: lists/tor-exits.txt}   # one CIDR or address per line, # comments
    geoip: /var/lib/GeoIP/GeoLite2-Country.mmdb                           # optional
    reload_interval: 30s                                                   # files re-read when they change
```

`lookup(ip)` gives `{"country": "FR", "reputation": ["tor"]}`: `country` is absent without a database (or for an
address it does not know), `reputation` is absent when no list is configured, so a condition that needs them
(`client.country == "FR"`) cannot evaluate and fails closed. Used by authz conditions (the `client` variable)
and by flows (`countries`, `refuse_reputation`). Files are read relative to the working directory, like
`jwks_file`; a list or database that cannot be read keeps its previous content, and at the first load is an
error of the config.
"""

from __future__ import annotations

import bisect
import ipaddress
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import maxminddb
from pydantic import Field

from bastion.config.base import Duration, Model

_CACHE = 4096  # recent addresses remembered (LRU): authz and flows of one request share one lookup


class SignalsConfig(Model):
    """`gateway.signals`: where client reputation and country come from."""

    reputation: dict[str, Path] = Field(
        default_factory=dict, description="List name -> file of CIDRs (`{tor: lists/tor-exits.txt}`).")
    geoip: Path | None = Field(None, description="A MaxMind DB (GeoLite2/GeoIP2 Country or City) for `country`.")
    reload_interval: Duration = Field(30.0, description="How often the files are checked for change.")


class _Ranges:
    """One CIDR list as sorted, merged integer ranges per IP version: a lookup is one bisect."""

    def __init__(self, text: str, source: str) -> None:
        nets: dict[int, list[Any]] = {4: [], 6: []}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                net = ipaddress.ip_network(line, strict=False)
            except ValueError:
                raise ValueError(f"{source}:{number}: not an address or CIDR: {line[:60]!r}") from None
            nets[net.version].append(net)
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, items in nets.items():
            merged = list(ipaddress.collapse_addresses(items))
            self._starts[version] = [int(n.network_address) for n in merged]
            self._ends[version] = [int(n.broadcast_address) for n in merged]

    def __contains__(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        starts = self._starts[address.version]
        i = bisect.bisect_right(starts, int(address)) - 1
        return i >= 0 and int(address) <= self._ends[address.version][i]


class ClientSignals:
    """Reputation and country of client addresses, from files reloaded when they change."""

    def __init__(self, config: SignalsConfig, monotonic: Callable[[], float]) -> None:
        self._config = config
        self._mono = monotonic
        self._stamps: dict[Path, tuple[float, int]] = {}
        self._lists: dict[str, _Ranges] = {}
        self._geo: Any = None
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._checked = -float("inf")
        self.errors: list[str] = []
        self.reload(strict=True)

    @property
    def has_country(self) -> bool:
        return self._geo is not None

    def reload(self, *, strict: bool = False) -> None:
        """Re-read changed files; `strict` (first load): a file that cannot be read is a config error."""
        self._checked = self._mono()
        errors: list[str] = []
        changed = False
        for name, path in self._config.reputation.items():
            if self._changed(path):
                try:
                    self._lists[name] = _Ranges(path.read_text(), str(path))
                    changed = True
                except (OSError, ValueError) as exc:
                    errors.append(f"reputation list {name}: {exc}")
        geoip = self._config.geoip
        if geoip is not None and self._changed(geoip):
            try:
                self._geo = maxminddb.open_database(str(geoip), maxminddb.MODE_MEMORY)
                changed = True
            except (OSError, ValueError) as exc:
                errors.append(f"geoip database {geoip}: {exc}")
        if errors and strict:
            raise ValueError("; ".join(errors))
        self.errors = errors
        if changed:
            self._cache.clear()  # a bounded cache, emptied only because its source changed

    def _changed(self, path: Path) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            self._stamps.pop(path, None)
            return True  # reading it reports the error
        stamp = (st.st_mtime, st.st_size)
        if self._stamps.get(path) == stamp:
            return False
        self._stamps[path] = stamp
        return True

    def lookup(self, ip: str) -> dict[str, Any]:
        """`{"country": "FR", "reputation": ["tor"]}`; keys absent where no source is configured or known."""
        if self._mono() - self._checked >= self._config.reload_interval:
            self.reload()
        found = self._cache.get(ip)
        if found is not None:
            self._cache.move_to_end(ip)
            return found
        found = self._compute(ip)
        self._cache[ip] = found
        if len(self._cache) > _CACHE:
            self._cache.popitem(last=False)
        return found

    def _compute(self, ip: str) -> dict[str, Any]:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return {}
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener's IPv4 client counts as its IPv4 address
        out: dict[str, Any] = {}
        if self._config.reputation:
            out["reputation"] = sorted(name for name, ranges in self._lists.items() if address in ranges)
        if self._geo is not None:
            record = self._geo.get(str(address))
            country = record.get("country", {}).get("iso_code") if isinstance(record, dict) else None
            if isinstance(country, str):
                out["country"] = country
        return out


# one ClientSignals per loaded config object (frozen models hash by value, and lists do not hash: by id, dropped
# when the config is collected), so authz and flows of one config share the files and the cache
_BY_CONFIG: dict[int, ClientSignals] = {}


def signals_for(config: Any, monotonic: Callable[[], float]) -> ClientSignals:
    """The signals of one loaded config (`config.gateway.signals`), shared by the stages that read them."""
    found = _BY_CONFIG.get(id(config))
    if found is None:
        found = _BY_CONFIG[id(config)] = ClientSignals(config.gateway.signals, monotonic)
        weakref.finalize(config, _BY_CONFIG.pop, id(config), None)
    return found
