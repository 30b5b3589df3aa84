"""A CRS rules directory loaded once: which files, their version and hash, and one compiled Program per
paranoia level. `load_ruleset` raises `SecLangError` (file:line) or `RulesetError` for a bad directory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bastion.stages.input.crs.compiler import build_program
from bastion.stages.input.crs.engine import Outcome, Transaction
from bastion.stages.input.crs.operators import Operators
from bastion.stages.input.crs.program import Program
from bastion.stages.input.crs.request import CrsRequest
from bastion.stages.input.crs.seclang import Marker, RuleSpec, VarSpec, parse_file, parse_variables

DEFAULT_RULES_DIR = Path("/usr/share/modsecurity-crs/rules")
"""Debian's `modsecurity-crs` package (CRS 3.3.4 on bookworm)."""

SKIPPED_FILES = {
    "REQUEST-910-IP-REPUTATION.conf": "IP reputation needs GeoIP databases and DNS blocklist lookups per "
                                      "request; Bastion's blocklist stage owns client reputation",
}
"""Request rule files not loaded, with the reason shown by `explain` (the differential test skips them too)."""


class RulesetError(ValueError):
    """The rules directory is missing or holds no request rules."""


@dataclass(frozen=True, slots=True)
class Ruleset:
    """The parsed directory: version (`SecComponentSignature`), a hash of every file read, the items."""

    directory: str
    version: str
    digest: str
    files: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    items: tuple[RuleSpec | Marker, ...]


def load_ruleset(directory: str) -> Ruleset:
    """Read `REQUEST-9*.conf` (in name order, as an `Include *.conf` would) and the `.data` files; parsed
    again when a file changed (a config reload then runs the new rules)."""
    root = Path(directory)
    if not root.is_dir():
        raise RulesetError(f"CRS rules directory {directory} does not exist (Debian: apt-get install "
                           "modsecurity-crs)")
    return _load(directory, _signature(root))


def _signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    stats = [(p.name, p.stat()) for p in sorted(root.iterdir()) if p.suffix in (".conf", ".data")]
    return tuple((name, st.st_mtime_ns, st.st_size) for name, st in stats)


@lru_cache(maxsize=8)
def _load(directory: str, signature: tuple[tuple[str, int, int], ...]) -> Ruleset:
    root = Path(directory)
    paths = sorted(root.glob("REQUEST-9*.conf"))
    if not paths:
        raise RulesetError(f"CRS rules directory {directory} holds no REQUEST-9*.conf rule files")
    digest = hashlib.sha256()
    items: list[RuleSpec | Marker] = []
    version = "unknown"
    files, skipped = [], []
    for path in paths:
        if path.name in SKIPPED_FILES:
            skipped.append((path.name, SKIPPED_FILES[path.name]))
            continue
        parsed = parse_file(path)
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
        version = parsed.signature or version
        items.extend(parsed.items)
        files.append(path.name)
    for data in sorted(root.glob("*.data")):
        digest.update(data.name.encode() + b"\0" + data.read_bytes())
    return Ruleset(directory, version, digest.hexdigest()[:16], tuple(files), tuple(skipped), tuple(items))


class CrsEngine:
    """One rule set compiled for one paranoia level and threshold: `evaluate(request) -> Outcome`."""

    def __init__(self, ruleset: Ruleset, paranoia: int, threshold: int) -> None:
        self.ruleset = ruleset
        self.paranoia = paranoia
        self.threshold = threshold
        # what crs-setup.conf would set: the initialisation rules (901xxx) fill in every other default
        self.setup = {"crs_setup_version": "334", "paranoia_level": str(paranoia),
                      "executing_paranoia_level": str(paranoia), "inbound_anomaly_score_threshold": str(threshold)}
        self.program: Program = build_program(list(ruleset.items), Operators(Path(ruleset.directory)), paranoia,
                                              self.setup)

    def evaluate(self, request: CrsRequest, removed: tuple[str, ...] = (),
                 removed_targets: tuple[tuple[str, str], ...] = (),
                 tag_targets: list[tuple[str, VarSpec]] | None = None, removed_tags: tuple[str, ...] = ()) -> Outcome:
        """Run phases 1 and 2. `removed` are rule ids, `removed_targets` (rule id, target such as
        `ARGS:comment`) and `removed_tags` what a governed exception switched off for this route
        (ctl:ruleRemoveById, ctl:ruleRemoveTargetById and ctl:ruleRemoveByTag applied before the first rule)."""
        tx = Transaction(self.program, request, self.program.initial_tx)
        tx.removed_ids.update(removed)
        tx.removed_tags.update(removed_tags)
        for rule_id, target in removed_targets:
            tx.removed_targets.setdefault(rule_id, []).extend(parse_variables(target, "exception", 0))
        if tag_targets:  # ctl:ruleRemoveTargetByTag, from API-aware scoping
            tx.removed_tag_targets.extend(tag_targets)
        return tx.run()


def crs_engine(directory: str, paranoia: int, threshold: int) -> CrsEngine:
    """Compiled once per (rule files, paranoia, threshold) and process."""
    return _engine(load_ruleset(directory), paranoia, threshold)


@lru_cache(maxsize=16)
def _engine(ruleset: Ruleset, paranoia: int, threshold: int) -> CrsEngine:
    return CrsEngine(ruleset, paranoia, threshold)
