"""Immutable value classes without dataclasses' cost, in both builds.

A hot-path value class (`ControlRecord`, `Hit`, `Outcome`) declares its fields `Final` in `__slots__`: mypy refuses
an assignment and the class compiled by mypyc has no setter for them. `freeze_pure` gives the pure build the same
refusal: each field may be set once, in `__init__`, as a frozen dataclass allows.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError


def _write_once(self: object, name: str, value: object) -> None:
    if hasattr(self, name):
        raise FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def freeze_pure(*classes: type) -> None:
    """Make each interpreted class's fields write-once; a class compiled by mypyc is left as it is."""
    for cls in classes:
        if not hasattr(cls, "__mypyc_attrs__"):
            setattr(cls, "__setattr__", _write_once)  # noqa: B010 (mypy: no assignment to a method)
