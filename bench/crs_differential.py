"""Bastion's CRS engine against libmodsecurity (ModSecurity v3) on the generated attack corpus.

    python bench/crs_differential.py [paranoia]     # agreement per category, disagreements by rule

A request agrees when both engines report the same set of matched rule ids (and so the same block decision).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.crs_corpus import attack_corpus
from bench.crs_reference import Bastion, ModSecurity, Request


def compare(requests: list[Request], paranoia: int = 1) -> tuple[Counter[str], Counter[str], Counter[str],
                                                                    Counter[str], list[tuple[Request, frozenset[str],
                                                                                             frozenset[str]]]]:
    """(requests per category, agreements per category, ModSecurity blocks, Bastion blocks, disagreements)."""
    reference, ours = ModSecurity(paranoia), Bastion(paranoia)
    total: Counter[str] = Counter()
    agree: Counter[str] = Counter()
    ref_blocks: Counter[str] = Counter()
    our_blocks: Counter[str] = Counter()
    diffs = []
    for req in requests:
        category = req.label.split("/")[0]
        ref_block, ref_ids = reference.run(req)
        our_block, our_ids = ours.run(req)
        total[category] += 1
        ref_blocks[category] += ref_block
        our_blocks[category] += our_block
        if ref_ids == our_ids:
            agree[category] += 1
        else:
            diffs.append((req, ref_ids, our_ids))
    return total, agree, ref_blocks, our_blocks, diffs


def main() -> None:
    paranoia = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    total, agree, ref_blocks, our_blocks, diffs = compare(attack_corpus(), paranoia)
    print(f"paranoia {paranoia}\n\n| category | requests | same rule ids | ModSecurity blocks | Bastion blocks |")
    print("|---|---:|---:|---:|---:|")
    for category in total:
        print(f"| {category} | {total[category]} | {agree[category] / total[category]:.1%} | {ref_blocks[category]} "
              f"| {our_blocks[category]} |")
    n = sum(total.values())
    print(f"| all | {n} | {sum(agree.values()) / n:.2%} | {sum(ref_blocks.values())} | {sum(our_blocks.values())} |")
    only_ref: Counter[str] = Counter()
    only_ours: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for req, ref_ids, our_ids in diffs:
        for rule in ref_ids - our_ids:
            only_ref[rule] += 1
            examples.setdefault("-" + rule, req.label)
        for rule in our_ids - ref_ids:
            only_ours[rule] += 1
            examples.setdefault("+" + rule, req.label)
    print("\nrules only ModSecurity reported:", ", ".join(f"{r} x{c} (e.g. {examples['-' + r]})"
                                                      for r, c in only_ref.most_common(20)))
    print("rules only Bastion reported:", ", ".join(f"{r} x{c} (e.g. {examples['+' + r]})"
                                                  for r, c in only_ours.most_common(20)))


if __name__ == "__main__":
    main()
