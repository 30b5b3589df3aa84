"""The fuzz targets: the seed corpus replays clean, and all targets run under atheris for a few seconds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fuzz.run import HERE, ROOT, command
from fuzz.targets import TARGETS, combined_seed

SEEDS = {target: sorted((HERE / "corpus" / target).iterdir()) for target in TARGETS}


@pytest.mark.parametrize("target", list(TARGETS))
def test_seed_corpus_replays_clean(target):
    assert SEEDS[target], f"fuzz/corpus/{target}/ has no seed"
    for seed in SEEDS[target]:
        TARGETS[target](seed.read_bytes())  # raises on a broken invariant


def test_every_target_runs_under_atheris_without_a_crash(tmp_path: Path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for target, files in SEEDS.items():
        for seed in files:
            (seeds / f"{target}-{seed.name}").write_bytes(combined_seed(target, seed.read_bytes()))
    args = command("all", 3, tmp_path / "work")
    args[-1] = str(seeds)
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    crashes = [p for p in (tmp_path / "work").iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
    found = done.stderr[done.stderr.find("=== Uncaught"):] if "=== Uncaught" in done.stderr else done.stderr[-2000:]
    assert done.returncode == 0 and not crashes, f"{[(p.name, p.read_bytes()[:300]) for p in crashes]}\n{found}"
    assert "DONE" in done.stderr
