"""Load `bastion.yaml`: YAML -> plain data with a position index (`source.py`), `include:` files merged
(`include.py`), then the pydantic models.

Every error is reported like a compiler's: `file:line:col: field.path: message`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from bastion.config.include import include_files, root_file  # `include:` files and their `owners`
from bastion.config.source import (  # re-exported: the loader is where callers reach for them
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    YAML_NODES_BASE,
    ConfigError,
    Diagnostic,
    LoadedConfig,
    Loc,
    Positions,
    did_you_mean,
    dotted,
    known_fields,
    pydantic_diagnostics,
    read_yaml,
    readable,
)

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "YAML_NODES_BASE", "ConfigError", "Diagnostic", "LoadedConfig",
           "Loc", "Positions", "did_you_mean", "dotted", "known_fields", "load_config", "pydantic_diagnostics",
           "read_yaml", "readable"]


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate the root model; cross-section rules are checked by `compile`."""
    import hashlib

    from bastion.config.models import BastionConfig

    path = root_file(Path(path))
    data, positions = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([positions.diagnostic((), "the config must be a YAML mapping")])
    data, positions, files = include_files(path, data, positions)
    try:
        model = BastionConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(pydantic_diagnostics(exc, positions)) from None
    from bastion.config.secrets import resolve_secrets  # `{env: ..}` / `{file: ..}` secrets, read on every load

    unread = resolve_secrets(model, path.parent)
    if unread:
        raise ConfigError([positions.diagnostic(loc, message) for loc, message in unread])
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    return LoadedConfig(path, model, positions, data, digest)
