"""Detection and false-positive rates of the injection inspection on the labelled corpus.

    python bench/inspection_corpus.py            # Markdown table, every category and paranoia level

Attacks: tests/data/inspection/<category>.txt. Benign: tests/data/inspection/benign_<category>.txt (look-alikes
of that category) plus benign_general.txt (everyday values), counted for every category. A value counts as
detected (attack) or as a false positive (benign) when the inspector with every category enabled flags it,
whatever category it names: that is what blocks a request.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bastion.stages.input.config import CATEGORIES
from bastion.stages.input.inspection import Inspector, load_rules

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "inspection"


@dataclass(frozen=True)
class Rates:
    category: str
    paranoia: int
    attacks: int
    detected: int
    benign: int
    false_positives: int
    missed: tuple[str, ...]
    flagged: tuple[str, ...]

    @property
    def detection(self) -> float:
        return self.detected / self.attacks

    @property
    def fp_rate(self) -> float:
        return self.false_positives / self.benign


def read(name: str, corpus: Path = CORPUS) -> list[str]:
    lines = (corpus / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def evaluate(paranoia: int, corpus: Path = CORPUS) -> list[Rates]:
    inspector = Inspector(load_rules(), paranoia, set(CATEGORIES))
    general = read("benign_general.txt", corpus)
    out = []
    for category in CATEGORIES:
        attacks = read(f"{category}.txt", corpus)
        benign = [*read(f"benign_{category}.txt", corpus), *general]
        missed = tuple(a for a in attacks if inspector.inspect(a) is None)
        flagged = tuple(b for b in benign if inspector.inspect(b) is not None)
        out.append(Rates(category, paranoia, len(attacks), len(attacks) - len(missed), len(benign),
                         len(flagged), missed, flagged))
    return out


def evaluate_holdout(paranoia: int, corpus: Path = CORPUS / "holdout") -> list[Rates]:
    """The same rates on a smaller corpus written after the rules were tuned and never used to tune them."""
    inspector = Inspector(load_rules(), paranoia, set(CATEGORIES))
    benign = read("benign.txt", corpus)
    flagged = tuple(b for b in benign if inspector.inspect(b) is not None)
    out = []
    for category in CATEGORIES:
        attacks = read(f"{category}.txt", corpus)
        missed = tuple(a for a in attacks if inspector.inspect(a) is None)
        out.append(Rates(category, paranoia, len(attacks), len(attacks) - len(missed), len(benign),
                         len(flagged), missed, flagged))
    return out


def table(levels: tuple[int, ...] = (1, 2, 3, 4)) -> str:
    rows = ["| category | paranoia | attacks | detected | detection | benign | false positives | FP rate |",
            "|---|---|---|---|---|---|---|---|"]
    for level in levels:
        for r in evaluate(level):
            rows.append(f"| {r.category} | {level} | {r.attacks} | {r.detected} | {r.detection:.1%} | {r.benign} "
                        f"| {r.false_positives} | {r.fp_rate:.1%} |")
    return "\n".join(rows)


def holdout_table(levels: tuple[int, ...] = (1, 2)) -> str:
    rows = ["| category | paranoia | attacks | detected | detection | benign (shared) | false positives |",
            "|---|---|---|---|---|---|---|"]
    for level in levels:
        for r in evaluate_holdout(level):
            rows.append(f"| {r.category} | {level} | {r.attacks} | {r.detected} | {r.detection:.1%} | {r.benign} "
                        f"| {r.false_positives} |")
    return "\n".join(rows)


def main() -> int:
    print("## Tuning corpus\n")
    print(table())
    print("\n## Held-out corpus\n")
    print(holdout_table())
    if "-v" in sys.argv:
        for level in (1, 2):
            for r in [*evaluate(level), *evaluate_holdout(level)]:
                for value in r.missed:
                    print(f"PL{level} missed {r.category}: {value}")
                for value in r.flagged:
                    print(f"PL{level} false positive ({r.category} set): {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
