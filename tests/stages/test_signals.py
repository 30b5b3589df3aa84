"""Client signals from real files: CIDR reputation lists and a MaxMind DB built by the test, reloaded on change."""

from __future__ import annotations

import pytest

from bastion.stages.signals import ClientSignals, SignalsConfig
from tests.stages.signals_data import write_country_db


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def files(tmp_path):
    (tmp_path / "tor.txt").write_text("# exits\n198.51.100.7\n198.51.100.0/28  # a block\n2001:db8:dead::/48\n")
    (tmp_path / "scanners.txt").write_text("203.0.113.0/24\n")
    write_country_db(tmp_path / "geo.mmdb", {"FR": ["192.0.2.0/24"], "US": ["198.51.100.0/24", "2001:db8::/32"]})
    return tmp_path


@pytest.mark.parametrize(("ip", "expected"), [
    ("192.0.2.10", {"country": "FR", "reputation": []}),
    ("198.51.100.7", {"country": "US", "reputation": ["tor"]}),
    ("198.51.100.20", {"country": "US", "reputation": []}),  # outside the /28
    ("203.0.113.9", {"reputation": ["scanners"]}),  # the database does not know it: no country
    ("2001:db8:dead::1", {"country": "US", "reputation": ["tor"]}),
    ("::ffff:192.0.2.10", {"country": "FR", "reputation": []}),  # IPv4-mapped, from a dual-stack listener
    ("not-an-ip", {}),
])
def test_lookup(files, ip, expected):
    signals = ClientSignals(SignalsConfig(reputation={"tor": files / "tor.txt", "scanners": files / "scanners.txt"},
                                          geoip=files / "geo.mmdb"), Clock())
    assert signals.lookup(ip) == expected


def test_without_sources_the_keys_are_absent(files):
    assert ClientSignals(SignalsConfig(), Clock()).lookup("192.0.2.10") == {}


def test_files_are_reloaded_when_they_change_and_a_broken_one_keeps_the_last(files):
    clock = Clock()
    signals = ClientSignals(SignalsConfig(reputation={"tor": files / "tor.txt"}, geoip=files / "geo.mmdb",
                                          reload_interval=5), clock)
    assert signals.lookup("192.0.2.99") == {"country": "FR", "reputation": []}
    (files / "tor.txt").write_text("192.0.2.99\n")
    write_country_db(files / "geo.mmdb", {"DE": ["192.0.2.0/24"]})
    assert signals.lookup("192.0.2.99")["reputation"] == []  # not checked again before the interval
    clock.now += 5
    assert signals.lookup("192.0.2.99") == {"country": "DE", "reputation": ["tor"]}
    (files / "tor.txt").write_text("192.0.2.99\nnonsense\n")
    clock.now += 5
    assert signals.lookup("192.0.2.99")["reputation"] == ["tor"]
    assert signals.errors and "tor.txt:2" in signals.errors[0]


def test_an_unreadable_file_at_the_first_load_is_a_config_error(files):
    with pytest.raises(ValueError, match=r"missing\.txt"):
        ClientSignals(SignalsConfig(reputation={"x": files / "missing.txt"}), Clock())
