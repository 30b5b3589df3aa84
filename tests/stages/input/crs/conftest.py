from __future__ import annotations

from pathlib import Path

import pytest

from bastion.stages.input.crs.ruleset import DEFAULT_RULES_DIR

# Debian's modsecurity-crs is a system package `make test` installs (SYSTEM_PACKAGES): a test that needs it
# fails, never skips, when it is missing.
requires_crs = pytest.mark.usefixtures("installed_crs")


@pytest.fixture
def installed_crs() -> Path:
    assert DEFAULT_RULES_DIR.is_dir(), "Debian's modsecurity-crs is not installed: run `make system-deps`"
    return DEFAULT_RULES_DIR


@pytest.fixture
def rules_dir(tmp_path: Path):
    """Write `REQUEST-9xx-*.conf` files into a fresh directory: rules_dir({"REQUEST-901-A.conf": "..."})."""
    def make(files: dict[str, str]) -> Path:
        for name, text in files.items():
            (tmp_path / name).write_text(text, encoding="utf-8")
        return tmp_path
    return make
