from dataclasses import FrozenInstanceError

import pytest

from bastion.immutable import freeze_pure


class _Point:
    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


freeze_pure(_Point)


def test_fields_are_set_once_then_refused() -> None:
    point = _Point(1, 2)
    assert (point.x, point.y) == (1, 2)
    with pytest.raises(FrozenInstanceError, match="'x'"):
        point.x = 3
    assert point.x == 1


def test_a_compiled_class_is_left_as_it_is() -> None:
    class Native:
        __mypyc_attrs__ = ("x",)  # what mypyc puts on a class it compiled

        def __init__(self) -> None:
            self.x = 1

    freeze_pure(Native)
    native = Native()
    native.x = 2  # a compiled class refuses through its missing setter, not through __setattr__
    assert native.x == 2
