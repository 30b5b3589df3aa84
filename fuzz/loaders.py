"""Config and OpenAPI loading: any file is a loaded document or a `ConfigError`, never a crash or a blow-up."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bastion.compile import compile_config
from bastion.config.loader import ConfigError, load_config
from bastion.openapi.loader import load_openapi

_folder: Path | None = None


def _file(name: str, data: bytes) -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="bastion-fuzz-"))
    path = _folder / name
    path.write_bytes(data)
    return path


def config(data: bytes) -> None:
    path = _file("bastion.yaml", data)
    try:
        compile_config(load_config(path), build_stages=False)
    except ConfigError:
        return


def openapi(data: bytes) -> None:
    path = _file("openapi.yaml", data)
    try:
        load_openapi(path)
    except ConfigError:
        return
