"""Every file a config refers to (TLS certificates and keys, CA bundles, OpenAPI documents, JWKS files, Cedar
policies, descriptor sets, the approved config of the drift watch), checked before anything is served.

`validate` reports a missing or unreadable file at the line that names it, rather than `serve` dying later
with a bare `FileNotFoundError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bastion.config.loader import Diagnostic, LoadedConfig, Loc

# paths the gateway writes, not reads: they need not exist yet
_OUTPUTS = frozenset({"path", "spool_dir"})


def referenced_files(model: Any, loc: Loc = ()) -> list[tuple[Loc, Path]]:
    """(field path, file) for every path-typed value in the config."""
    out: list[tuple[Loc, Path]] = []
    if isinstance(model, BaseModel):
        for name, info in type(model).model_fields.items():
            key = info.alias or name
            out += referenced_files(getattr(model, name), (*loc, key))
    elif isinstance(model, dict):
        for key, value in model.items():
            out += referenced_files(value, (*loc, key))
    elif isinstance(model, list | tuple):
        for i, value in enumerate(model):
            out += referenced_files(value, (*loc, i))
    elif isinstance(model, Path) and not (loc and loc[-1] in _OUTPUTS and "audit" in loc):
        out.append((loc, model))
    return out


def missing_files(loaded: LoadedConfig) -> list[Diagnostic]:
    """An error for each referenced file that does not exist or cannot be read, at its `file:line`."""
    base = loaded.path.parent
    out = []
    for loc, path in referenced_files(loaded.model):
        full = path if path.is_absolute() else base / path
        if not full.exists():
            problem = f"file not found: {full}"
        elif full.is_file() and not os.access(full, os.R_OK):
            problem = f"file not readable: {full}"
        else:
            continue
        out.append(loaded.positions.diagnostic(loc, problem))
    return out
