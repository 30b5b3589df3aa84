"""scripts/mirror_check.py: the lint step that keeps tests mirroring the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "mirror_check.py"
spec = importlib.util.spec_from_file_location("mirror_check", SCRIPT)
assert spec is not None and spec.loader is not None
mirror_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mirror_check)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_mirrored_modules_pass_and_an_unmirrored_one_fails(tmp_path: Path):
    root = _tree(tmp_path, {"bastion/__init__.py": "from bastion.a import x\n", "bastion/a.py": "x = 1\n",
                            "bastion/pkg/__init__.py": "def build(): ...\n", "bastion/pkg/b.py": "",
                            "tests/test_a.py": "", "tests/pkg/test_b.py": ""})
    errors, warnings = mirror_check.check(root)
    assert [e.split(":")[0] for e in errors] == ["bastion/pkg/__init__.py"]  # it defines something: test_init.py
    assert warnings == []
    (root / "tests/pkg/test_init.py").write_text("")
    assert mirror_check.check(root) == ([], [])
    assert mirror_check.main(["mirror_check", str(root)]) == 0


def test_a_listed_reason_exempts_and_a_stale_entry_warns(tmp_path: Path):
    root = _tree(tmp_path, {"bastion/a.py": "", "bastion/b.py": "", "tests/test_b.py": "",
                            "tests/mirror_exempt.toml": '[covered-elsewhere]\n"bastion/a.py" = "tested in x"\n'
                                                        '"bastion/b.py" = "was untested"\n'})
    errors, warnings = mirror_check.check(root)
    assert errors == [] and len(warnings) == 1 and warnings[0].startswith("bastion/b.py")
    (root / "tests/mirror_exempt.toml").write_text('[covered-elsewhere]\n"bastion/a.py" = " "\n')
    assert mirror_check.main(["mirror_check", str(root)]) == 1  # a blank reason is no reason
