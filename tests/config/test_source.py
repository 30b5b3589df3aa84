"""The YAML reader under the loader: positions, diagnostics and the bounds on what a file may expand to."""

from __future__ import annotations

import pytest

from bastion.config.source import Positions, dotted


def test_a_diagnostic_points_at_the_deepest_known_ancestor_of_a_missing_field() -> None:
    positions = Positions("x.yaml", {(): (1, 1), ("apis",): (3, 1), ("apis", 0): (4, 5)})
    assert str(positions.diagnostic(("apis", 0, "routes"), "Field required")) == \
        "x.yaml:4:5: apis[0].routes: Field required"
    assert dotted(("apis", 0, "routes", 2, "path")) == "apis[0].routes[2].path"


# ---- size limits: a config or OpenAPI file is refused to load, never expanded without bound ---------------


def test_a_file_one_byte_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    from bastion.config import source

    monkeypatch.setattr(source, "MAX_YAML_BYTES", 64)
    path = tmp_path / "x.yaml"
    path.write_text("a: " + "b" * 60 + "\n")  # exactly 64 bytes
    assert source.read_yaml(path)[0] == {"a": "b" * 60}
    path.write_text("a: " + "b" * 61 + "\n")
    with pytest.raises(source.ConfigError, match="larger than 64 bytes"):
        source.read_yaml(path)


def test_an_alias_bomb_is_refused_not_expanded(tmp_path):
    from bastion.config import source

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 10^9 values once expanded, a few hundred bytes on disk
        levels.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")
    with pytest.raises(source.ConfigError, match="more values than the file has bytes"):
        source.read_yaml(path)


def test_nesting_past_the_depth_limit_is_refused(tmp_path):
    from bastion.config import source

    path = tmp_path / "deep.yaml"
    path.write_text("[" * (source.MAX_YAML_DEPTH + 1) + "]" * (source.MAX_YAML_DEPTH + 1) + "\n")
    with pytest.raises(source.ConfigError, match="nested deeper"):
        source.read_yaml(path)
    path.write_text("[" * source.MAX_YAML_DEPTH + "]" * source.MAX_YAML_DEPTH + "\n")
    source.read_yaml(path)
