"""The soak's verdict: PASS only when RSS after warm-up has no slope beyond noise and descriptors stay put."""

from __future__ import annotations

import json
import random

import pytest

from bench.soak import NOISY, Mix, Sample, main, settled, verdict

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


def _with_tables(rss_mib: list[float], sizes: list[int]) -> list[Sample]:
    samples = _samples(rss_mib)
    for sample, size in zip(samples, sizes, strict=True):
        sample.tables = {"tokens (max 10000)": size, "limits (max 200000)": 50}
    return samples


def test_a_small_table_renewed_at_once_is_settled():
    sizes = [40, 50, 50, 50, 100, 50, 50, 100, 50, 50]  # 50 entries, all renewed together every 150 s
    samples = _with_tables([90] * 10, sizes)
    assert settled(samples)["tokens (max 10000)"] == 30


def test_a_table_settles_when_it_stops_growing():
    samples = _with_tables([90] * 10, [100, 400, 700, 1000, 1010, 990, 1005, 1000, 1060, 1002])
    assert settled(samples) == {"limits (max 200000)": 30, "tokens (max 10000)": 120}


def test_the_warm_up_lasts_until_the_last_table_has_settled():
    # RSS follows the table up to 180 s, then stays flat: with the 30 s warm-up alone this is a slope
    rss = [80, 82, 84, 86, 88, 90, 90.1, 90.0, 90.2, 90.1, 90.0, 90.1, 90.2, 90.1]
    sizes = [1000, 2000, 3000, 4000, 5000, 6000, 6100, 6000, 6050, 6000, 6000, 6030, 6010, 6000]
    ok, why = verdict(_with_tables(rss, sizes), warmup=30)
    assert ok and "warm-up 180 s (the last table to settle: tokens (max 10000), at 180 s)" in why
    assert not verdict(_samples(rss), warmup=30)[0]  # the same RSS without the tables' evidence


def test_a_table_still_filling_in_the_second_half_fails():
    sizes = [1000 * (i + 1) for i in range(10)]  # grows to the end: not to be told from a leak
    ok, why = verdict(_with_tables([90] * 10, sizes), warmup=100)
    assert not ok and "still filling" in why


def test_a_leak_fails_after_the_tables_have_settled():
    rss = [90 + 0.3 * i for i in range(14)]  # +0.6 MiB/min, steadily
    sizes = [1000, 2000, 3000, 4000, 5000, 6000, 6100, 6000, 6050, 6000, 6000, 6030, 6010, 6000]
    assert not verdict(_with_tables(rss, sizes), warmup=100)[0]


def test_a_descriptor_blip_at_the_end_is_no_leak():
    fds = [40, 41, 40, 40, 52, 40, 41, 40, 40, 41, 40, 41, 51]  # the upstream pool opens a few during a spike
    assert verdict(_samples([90] * 13, fds), warmup=100)[0]


def test_replay_gives_the_verdict_of_saved_samples(tmp_path):
    saved = tmp_path / "samples.json"
    saved.write_text(json.dumps([vars(s) for s in _samples([80, 81, 82, 83, 84, 85, 86, 87, 88, 89])]))
    assert main(["--replay", str(saved), "--warmup", "100", "--no-write"]) == 1
    saved.write_text(json.dumps([vars(s) for s in _samples([90] * 10)]))
    assert main(["--replay", str(saved), "--warmup", "100", "--no-write"]) == 0


def test_never_seen_tokens_come_exactly_one_request_in_20_the_rest_in_proportion():
    mix, rng = Mix(), random.Random(18)
    kinds: list[str] = []
    for _ in range(20_000):
        before = mix.fresh
        raw = mix.next(rng)
        kinds.append("fresh" if mix.fresh > before else "noisy" if NOISY.encode() in raw else
                     "injection" if b"UNION" in raw else "order" if raw.startswith(b"POST") else "get")
    assert all(kinds[i:i + 20].count("fresh") == 1 for i in range(0, 20_000, 20))  # every window of 20
    share = {kind: kinds.count(kind) / len(kinds) for kind in set(kinds)}
    assert abs(share["noisy"] - 0.15) < 0.01 and abs(share["order"] - 0.20) < 0.01
    assert abs(share["injection"] - 0.05) < 0.005 and abs(share["get"] - 0.55) < 0.01


def test_a_table_settles_only_when_its_hash_table_has_stopped_growing():
    samples = _with_tables([90] * 10, [1000, 3000, 3000, 3010, 3000, 2990, 3000, 3005, 3000, 3000])
    for sample, size in zip(samples, [100_000, 300_000] * 2 + [510_000] * 6, strict=True):
        sample.table_bytes = {"tokens (max 10000)": size}  # resized to 3 slots an entry at 150 s
    assert settled(samples)["tokens (max 10000)"] == 150
