"""Tests mirror the package: `bastion/a/b.py` is tested in `tests/a/test_b.py` (a package's `__init__.py`, when
it defines anything, in `tests/a/test_init.py`). `make lint` runs this and fails on a module without its test
module, unless `tests/mirror_exempt.toml` lists it with the reason it is covered elsewhere.

    python scripts/mirror_check.py [ROOT]      # exit 0: every module mirrored or exempt; 1: not
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

EXEMPT_FILE = Path("tests/mirror_exempt.toml")


def defines_anything(path: Path) -> bool:
    """An `__init__.py` that only imports and re-exports has nothing of its own to test."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) for node in tree.body)


def mirror_of(module: Path) -> Path:
    """`bastion/a/b.py` -> `tests/a/test_b.py`; `bastion/a/__init__.py` -> `tests/a/test_init.py`."""
    relative = module.relative_to("bastion")
    name = "test_init.py" if module.name == "__init__.py" else f"test_{module.name}"
    return Path("tests", *relative.parts[:-1], name)


def missing(root: Path) -> list[tuple[str, str]]:
    """(module, expected test module) for every module of `root/bastion` without its mirror."""
    out = []
    for module in sorted((root / "bastion").rglob("*.py")):
        relative = module.relative_to(root)
        if module.name == "__init__.py" and not defines_anything(module):
            continue
        test = mirror_of(relative)
        if not (root / test).is_file():
            out.append((relative.as_posix(), test.as_posix()))
    return out


def exemptions(root: Path) -> dict[str, str]:
    """`"bastion/x.py" = "why it is covered elsewhere"` entries of the `[covered-elsewhere]` table."""
    path = root / EXEMPT_FILE
    table = tomllib.loads(path.read_text(encoding="utf-8")).get("covered-elsewhere", {}) if path.is_file() else {}
    return {module: str(reason) for module, reason in table.items()}


def check(root: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings): unmirrored modules without a reason; exemptions that are no longer needed."""
    exempt = exemptions(root)
    errors = [f"{module}: no test module {test} (add it, or list the module in {EXEMPT_FILE} with a reason)"
              for module, test in missing(root) if not exempt.get(module, "").strip()]
    unmirrored = {module for module, _ in missing(root)}
    warnings = [f"{module}: listed in {EXEMPT_FILE} but {mirror_of(Path(module)).as_posix()} exists or the "
                "module is gone: remove the entry" for module in sorted(exempt) if module not in unmirrored]
    return errors, warnings


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path.cwd()
    errors, warnings = check(root)
    for line in warnings:
        print(f"mirror-check: warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"mirror-check: {line}", file=sys.stderr)
    if not errors:
        print(f"mirror-check: every bastion/ module has its test module or a listed reason "
              f"({len(exemptions(root))} listed)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
