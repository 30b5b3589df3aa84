"""Client-signal files made by the tests: CIDR lists and a small MaxMind DB built with `mmdb-writer`."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def write_country_db(path: Path, countries: dict[str, list[str]]) -> Path:
    """`{"FR": ["192.0.2.0/24"], "US": ["2001:db8::/32"]}` -> a GeoIP2-Country-shaped database at `path`."""
    writer = MMDBWriter(ip_version=6, database_type="GeoIP2-Country", ipv4_compatible=True)
    for code, networks in countries.items():
        writer.insert_network(IPSet(networks), {"country": {"iso_code": code}})
    writer.to_db_file(str(path))
    return path
