"""The mypyc build (bastion/native.py): the module list is real, and the build under test is the one asked for.

`make test` sets BASTION_EXPECT_COMPILED=1 and `make test-pure` sets it to 0, so CI cannot run the pure build
twice and believe it tested the compiled one (or the reverse).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion import native


def loaded_from_extension(module: str) -> bool:
    """What the import system actually loaded, independent of `native.is_compiled`."""
    path = importlib.import_module(module).__file__ or ""
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_every_listed_module_is_a_bastion_source_once() -> None:
    assert len(set(native.MODULES)) == len(native.MODULES)
    for module in native.MODULES:
        assert module.startswith("bastion.") and native.source_path(module).is_file(), module
    assert "bastion.native" not in native.MODULES  # it reports on the build; it must load whatever happens


def test_is_compiled_says_what_the_import_system_loaded() -> None:
    for module in native.MODULES:
        assert native.is_compiled(module) == loaded_from_extension(module), module


def test_the_build_under_test_is_the_one_asked_for() -> None:
    compiled = [module for module in native.MODULES if loaded_from_extension(module)]
    expected = os.environ.get("BASTION_EXPECT_COMPILED")
    if expected == "1":
        assert compiled == list(native.MODULES)
        assert native.build_label() == f"compiled with mypyc: {len(compiled)} of {len(compiled)} hot-path modules"
    elif expected == "0":
        assert compiled == []
        assert native.build_label() == "pure Python"
    else:  # run by hand: whichever build is installed, it is whole, never half of each
        assert compiled in ([], list(native.MODULES))
    assert native.stale() == []  # compiled code older than its source would test code nobody can read
    c_built = [name for name, _ in native.C_EXTENSIONS if native.is_compiled(name)]
    if expected is not None:  # the hand-written C extensions come and go with the mypyc modules
        assert c_built == ([name for name, _ in native.C_EXTENSIONS] if expected == "1" else [])


def test_every_c_extension_has_its_source_in_the_package() -> None:
    root = Path(native.__file__).resolve().parents[1]
    for name, source in native.C_EXTENSIONS:
        assert name.startswith("bastion.") and (root / source).is_file(), name
        assert Path(source).with_suffix("").parts == tuple(name.split(".")), name  # beside the module it builds


def test_the_version_line_names_the_build() -> None:
    result = subprocess.run([sys.executable, "-m", "bastion", "--version"], capture_output=True, text=True,
                            check=True)
    assert result.stdout == f"bastion {importlib.import_module('bastion').__version__} ({native.build_label()})\n"


FIRST = native.MODULES[0]


@pytest.mark.parametrize(("edit", "changed"), [
    ("none", []),
    ("one digest differs", [FIRST]),
    ("one module missing", [FIRST]),
    ("no manifest", list(native.MODULES)),
])
def test_a_source_edited_after_the_build_is_noticed(tmp_path, edit, changed) -> None:
    manifest = tmp_path / "manifest.txt"
    digests = {module: native.digest(module) for module in native.MODULES}
    if edit == "one digest differs":
        digests[FIRST] = "0" * 64
    if edit == "one module missing":
        del digests[FIRST]
    if edit != "no manifest":
        manifest.write_text("".join(f"{module} {sha}\n" for module, sha in digests.items()))
    assert native.changed(native.recorded(manifest)) == changed
