from __future__ import annotations

from pathlib import Path

import pytest

from bastion.stages.input.crs.ruleset import DEFAULT_RULES_DIR

requires_crs = pytest.mark.skipif(not DEFAULT_RULES_DIR.is_dir(),
                                  reason="Debian's modsecurity-crs is not installed (make system-deps)")


@pytest.fixture
def rules_dir(tmp_path: Path):
    """Write `REQUEST-9xx-*.conf` files into a fresh directory: rules_dir({"REQUEST-901-A.conf": "..."})."""
    def make(files: dict[str, str]) -> Path:
        for name, text in files.items():
            (tmp_path / name).write_text(text, encoding="utf-8")
        return tmp_path
    return make
