"""The soak's verdict: PASS only when RSS after warm-up has no slope beyond noise and descriptors stay put."""

from __future__ import annotations

import pytest

from bench.soak import Sample, verdict

MIB = 2**20


def _samples(rss_mib: list[float], fds: list[int] | None = None) -> list[Sample]:
    fds = fds or [50] * len(rss_mib)
    return [Sample(30 * (i + 1), int(r * MIB), f, 6000, 2.0, 30.0, {"2xx": 6000}, 0)
            for i, (r, f) in enumerate(zip(rss_mib, fds, strict=True))]


@pytest.mark.parametrize(("name", "rss", "fds", "ok"), [
    ("warm_up_then_flat", [80, 85, 90, 93, 93.1, 93.0, 93.2, 93.1, 93.2, 93.1], None, True),
    ("flat_with_noise", [90, 91, 90.2, 91.1, 90.4, 90.9, 90.3, 91.0, 90.5, 90.8], None, True),
    ("steady_growth", [80, 81, 82, 83, 84, 85, 86, 87, 88, 89], None, False),
    ("slow_leak", [90, 90.3, 90.6, 90.9, 91.2, 91.5, 91.8, 92.1, 92.4, 92.7], None, False),
    ("descriptor_leak", [90] * 10, [50, 50, 50, 52, 54, 56, 58, 60, 62, 64], False),
])
def test_verdict(name, rss, fds, ok):
    assert verdict(_samples(rss, fds), warmup=100)[0] is ok


def test_too_few_samples_after_the_warm_up_is_no_pass():
    ok, why = verdict(_samples([90, 90, 90, 90]), warmup=100)
    assert not ok and "too few samples" in why
