"""The registry of fuzz targets: name -> `one_input(data: bytes) -> None`."""

from __future__ import annotations

from collections.abc import Callable

from fuzz import bodies, http, loaders, rules, tokens

TARGETS: dict[str, Callable[[bytes], None]] = {
    "http1_head": http.http1_head,
    "http1_body": http.http1_body,
    "path": http.path,
    "jwt": tokens.jwt,
    "config": loaders.config,
    "openapi": loaders.openapi,
    "multipart": bodies.multipart,
    "form": bodies.form,
    "json": bodies.json_limits,
    "graphql": bodies.graphql,
    "grpc": bodies.grpc,
    "seclang": rules.seclang,
}

_ORDER = tuple(TARGETS)


def everything(data: bytes) -> None:
    """Every target in one process: the first byte picks the target (`make test` fuzzes them all at once)."""
    if data:
        TARGETS[_ORDER[data[0] % len(_ORDER)]](data[1:])


def combined_seed(target: str, seed: bytes) -> bytes:
    """A seed of `target` as an input of `everything`."""
    return bytes([_ORDER.index(target)]) + seed
