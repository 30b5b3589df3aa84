"""docs/getting-started.md works as written: every command of its steps runs, and prints what the guide shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "getting-started.md"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block, in order."""
    return re.findall(r"```(\w+)\n(.*?)```", text, re.S)


def sessions(body: str) -> list[tuple[str, list[str]]]:
    """A console block as (command, the output lines the guide shows)."""
    out: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def shows(expected: list[str], actual: list[str]) -> bool:
    """The shown lines are the output's, in order from its first line; a line `...` skips any number of lines,
    and `...` inside a line matches anything there."""
    position, skip = 0, False
    for shown in expected:
        if shown == "...":
            skip = True
            continue
        pattern = re.compile("^" + ".*".join(re.escape(p) for p in shown.split("...")) + "$")
        while skip and position < len(actual) and not pattern.match(actual[position]):
            position += 1
        if position >= len(actual) or not pattern.match(actual[position]):
            return False
        position, skip = position + 1, False
    return True


def test_shows_matches_in_order_with_elisions() -> None:
    assert shows(["a", "...", "c ... e"], ["a", "b", "c d e"])
    assert not shows(["a", "c"], ["a", "b", "c"])  # without `...`, lines are consecutive
    assert not shows(["x"], ["a"]) and not shows(["b"], ["a", "b"])  # from the first line


def test_the_guide_runs_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    ran = 0
    for language, body in blocks(GUIDE.read_text()):
        if language == "sh" and "bastion serve" not in body:  # the last step serves forever
            subprocess.run(["bash", "-e", "-c", body], cwd=tmp_path, env=env, check=True, timeout=60)
            ran += 1
        elif language == "console":
            for command, expected in sessions(body):
                result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                                        text=True, timeout=60)
                actual = (result.stdout + result.stderr).splitlines()
                assert shows(expected, actual), f"$ {command}\n" + "\n".join(actual)
                ran += 1
    assert ran >= 9  # 3 blocks writing files, 6 commands whose output is checked
