"""libinjection for `@detectSQLi`: the C library inside the `libinjection-python` wheel, called through its
own exported C API.

The wheel's `is_sql_injection` builds a dict holding its token vector (eight dicts of bytes) on every call,
even for `dark`: ~27 k instructions a call, against ~10 k for the same test through `ctypes` (callgrind). The
extension module exports libinjection's C entry points; `libinjection_sqli(s, len, fp)` does exactly what the
wheel's function does (its source: `libinjection_sqli_init(s, len, 0)` + `libinjection_is_sqli`), here on the
UTF-8 bytes, whole length (NUL bytes included, as the wheel passes them). When a build of the wheel does not
export it, the wheel's function is used (same results, slower). `@detectXSS` keeps the wheel's `is_xss`: its
five C calls from Cython cost less (~4.8 k) than one call through ctypes (~7.8 k); `detect_xss` here is the C
entry point, for the test that both agree (tests/stages/input/crs/test_injection.py).

`hits_sqli` / `hits_xss` run libinjection over a whole list of texts in one C call (`_injection_any.c`, built
with the mypyc modules by `make install`) and give every hit's index: the engine asks them for a rule's every
value and stage, and visits only the values whose texts are injection. Both are None when that module is not
built (the pure build) or the wheel does not export the C API: the engine then calls the checks above value by
value.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from importlib import import_module

import libinjection

SqliCheck = Callable[[bytes], str | None]
"""UTF-8 text -> libinjection's SQLi fingerprint when it is SQL injection, else None."""
XssCheck = Callable[[bytes], bool]
"""UTF-8 text -> whether libinjection calls it XSS."""
AllHits = Callable[[list[str]], list[int] | None]
"""Texts -> the indices of every one libinjection calls injection (empty when none is), or None when a text has no
UTF-8 form (the caller then checks value by value)."""
FINGERPRINT_SIZE = 8  # LIBINJECTION_SQLI_MAX_TOKENS (5) + 1, rounded up as libinjection declares it


def wheel_sqli(data: bytes) -> str | None:
    """The wheel's Python function: the reference the C path must agree with."""
    result = libinjection.is_sql_injection(data.decode())
    return str(result["fingerprint"]) if result["is_sqli"] else None


def wheel_xss(data: bytes) -> bool:
    return bool(libinjection.is_xss(data.decode())["is_xss"])


def _c_api() -> tuple[SqliCheck, XssCheck] | None:
    """The C entry points of the loaded extension module, or None when it does not export them."""
    try:
        # PyDLL: the GIL stays held (these calls take microseconds; releasing it would cost more)
        lib = ctypes.PyDLL(libinjection.__file__)
        sqli, xss = lib.libinjection_sqli, lib.libinjection_xss
    except (OSError, AttributeError, TypeError):
        return None
    sqli.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p)
    sqli.restype = ctypes.c_int
    xss.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
    xss.restype = ctypes.c_int
    scratch = ctypes.create_string_buffer(FINGERPRINT_SIZE)  # written on every call, read only on a miss

    def c_sqli(data: bytes) -> str | None:
        if not sqli(data, len(data), scratch):
            return None
        # a hit (rare): again into a buffer of its own, so no other caller can have overwritten it
        fingerprint = ctypes.create_string_buffer(FINGERPRINT_SIZE)
        sqli(data, len(data), fingerprint)
        return fingerprint.value.decode()

    def c_xss(data: bytes) -> bool:
        return int(xss(data, len(data))) != 0

    return c_sqli, c_xss


_API = _c_api()
NATIVE = _API is not None
"""Whether the C entry points are used (else the wheel's Python functions)."""
detect_sqli: SqliCheck = _API[0] if _API is not None else wheel_sqli
detect_xss: XssCheck = _API[1] if _API is not None else wheel_xss


def _hits() -> tuple[AllHits, AllHits] | None:
    """The C helper's functions, bound to the wheel's C entry points; None when either is missing."""
    if not NATIVE:
        return None
    try:
        helper = import_module("bastion.stages.input.crs._injection_any")
    except ImportError:  # the pure build: no extension modules
        return None
    lib = ctypes.PyDLL(libinjection.__file__)
    helper.bind(ctypes.cast(lib.libinjection_sqli, ctypes.c_void_p).value,
                ctypes.cast(lib.libinjection_xss, ctypes.c_void_p).value)
    return helper.hits_sqli, helper.hits_xss


_HITS = _hits()
hits_sqli: AllHits | None = _HITS[0] if _HITS is not None else None
hits_xss: AllHits | None = _HITS[1] if _HITS is not None else None
