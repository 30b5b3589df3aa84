"""The CRS SecLang reader: any rule file is parsed rules or a `SecLangError` naming this file and a line in it.

`bastion validate` and every config load read the CRS rule files through `seclang.parse_file`; an operator's own
rule file may hold anything. The reader must refuse what it cannot read with its own error (file:line), so the
operator sees where; any other exception would be a traceback instead of a diagnostic.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bastion.stages.input.crs.seclang import Marker, RuleSpec, SecLangError, parse_file

NAME = "REQUEST-999-FUZZ.conf"
_DIRECTIVES = ("SecRule", "SecAction")
_folder: Path | None = None


def _path(data: bytes) -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="bastion-fuzz-"))
    path = _folder / NAME
    path.write_bytes(data)
    return path


def _lines(data: bytes) -> list[str]:
    """The physical lines as the reader numbers them (str.splitlines, after decoding what decodes)."""
    return data.decode("utf-8", "replace").splitlines()


def _check_chain(head: RuleSpec, lines: list[str], after: int) -> int:
    """Each rule of a chain is on a line of the file, after the one before it, starting with its directive;
    every rule but the last says `chain`. The last rule's line is returned."""
    links = (head, *head.chained)
    for index, rule in enumerate(links):
        if not after < rule.line <= len(lines):
            raise AssertionError(f"rule line {rule.line} outside {after + 1}..{len(lines)}")
        if not lines[rule.line - 1].strip().startswith(_DIRECTIVES):
            raise AssertionError(f"line {rule.line} is not a SecRule or SecAction: {lines[rule.line - 1][:80]!r}")
        if rule.file != NAME or (index and rule.chained):
            raise AssertionError(f"line {rule.line}: wrong file {rule.file!r} or a chain inside a chain")
        if any(a.name == "chain" for a in rule.actions) != (index < len(links) - 1):
            raise AssertionError(f"line {rule.line}: `chain` and the chained rules disagree")
        after = rule.line
    return after


def seclang(data: bytes) -> None:
    path = _path(data)
    lines = _lines(data)
    try:
        parsed = parse_file(path)
    except SecLangError as err:
        # a diagnostic points at this file and at a line that exists (line 1 of an empty file)
        if err.file != NAME or not 1 <= err.line <= max(1, len(lines)):
            raise AssertionError(f"error at {err.file}:{err.line} outside the file ({len(lines)} lines)") from err
        if not str(err).startswith(f"{NAME}:{err.line}: "):
            raise AssertionError(f"error message without file:line: {err}") from err
        return
    last = 0
    for item in parsed.items:
        if isinstance(item, Marker):
            if not last < item.line <= len(lines) or not lines[item.line - 1].strip().startswith("SecMarker"):
                raise AssertionError(f"marker at line {item.line} is not a SecMarker line")
            last = item.line
        else:
            last = _check_chain(item, lines, last)
