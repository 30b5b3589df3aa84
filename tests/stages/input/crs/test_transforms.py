"""Each t: function against ModSecurity's documented behaviour (reference manual v3, "Transformation
functions"), and the Unicode deviations the docs list."""

from __future__ import annotations

import binascii
import random
import re

import pytest

from bastion.stages.input.crs.transforms import JOINED, SEPARATOR, TRANSFORMS


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("urlDecode", "a%20b+c%27", "a b c'"),
    ("urlDecode", "100%", "100%"),                      # an invalid escape stays
    ("urlDecode", "%zz%4", "%zz%4"),
    ("urlDecode", "caf%C3%A9", "café"),                 # a UTF-8 run is one character
    ("urlDecodeUni", "%u003cscript%u003e", "<script>"),
    ("urlDecodeUni", "%uFF1Cscript", "<script"),          # fullwidth ASCII maps to ASCII, as in ModSecurity
    ("urlDecodeUni", "%u0627", "\u0627"),                # deviation: ModSecurity gives "'" (low byte 0x27)
    ("urlDecodeUni", "%u0025%u0034%u0031", "%41"),        # decoded once: a %-sign it produced is not re-decoded
    ("htmlEntityDecode", "&lt;a&gt;&quot;&amp;&#39;&#x41;&#66", "<a>\"&'AB"),
    ("htmlEntityDecode", "&nbsp;", "\xa0"),
    ("htmlEntityDecode", "&eacute;", "&eacute;"),        # only the names ModSecurity knows
    ("htmlEntityDecode", "&#x627;", "\u0627"),            # deviation: ModSecurity keeps the low byte
    ("jsDecode", r"\x3cscript\u003e\101\n\q", "<script>A\nq"),
    ("cssDecode", r"\3c script\000041\\", "<scriptA\\"),
    ("cssDecode", "j\\\navascript", "javascript"),
    ("utf8toUnicode", "\u0627", "\u0627"),                # deviation: ModSecurity writes %u0627
    ("utf8toUnicode", "c\x00at", "cat"),                 # ModSecurity v3 drops NUL here (checked with 3.0.15)
    ("lowercase", "SeLeCT", "select"),
    ("removeNulls", "a\x00b", "ab"),
    ("removeWhitespace", " a \t b\xa0c\n", "abc"),
    ("compressWhitespace", "a  \t\n b", "a b"),
    ("cmdLine", "C^aT /E\"t\"C/pa'ss'wd", "cat/etc/passwd"),
    ("cmdLine", "ping , -c ;1", "ping -c 1"),
    ("cmdLine", "echo (a)", "echo(a)"),
    ("normalizePath", "/a/./b//c/../d", "/a/b/d"),
    ("normalizePath", "/../../etc/passwd", "/etc/passwd"),
    ("normalizePath", "a/../../b", "../b"),
    ("normalizePathWin", "C:\\Windows\\..\\boot.ini", "C:/boot.ini"),
    ("replaceComments", "UNION/**/SELECT/*x", "UNION SELECT "),
    ("removeComments", "1/*c*/OR 1--rest", "1OR 1"),
    ("base64Decode", "PHNjcmlwdD4=", "<script>"),
    ("base64Decode", "PHNjcmlwdD4=!!", "<script>"),
    ("hexDecode", "3c7363", "<sc"),
    ("hexEncode", "<a", "3c61"),
    ("sha1", "abc", bytes.fromhex("a9993e364706816aba3e25717850c26c9cd0d89d").decode("latin-1")),
    ("escapeSeqDecode", r"\x41\102\n\z", "AB\n\\z"),
    ("length", "é1", "3"),                              # bytes, as ModSecurity counts
    ("jsDecode", "\\ud800x", "\ufffdx"),                   # a lone surrogate is no character
    ("urlDecodeUni", "%uDC00", "\ufffd"),
    ("trim", "  a b \t", "a b"),
])
def test_transformation(name: str, value: str, expected: str) -> None:
    assert TRANSFORMS[name](value) == expected


_ENCODERS = {"base64Decode", "hexDecode", "hexEncode", "sha1", "length"}  # always produce a new value


@pytest.mark.parametrize("name", sorted(set(TRANSFORMS) - _ENCODERS))
def test_nothing_to_do_returns_the_same_object(name: str) -> None:
    # the engine relies on identity to skip matching a value twice
    value = "plain"
    assert TRANSFORMS[name](value) is value


JOINED_VALUES = ["%27%20OR%201", "&lt;b&gt;\\", "\\x41\\", "A  B\t\n", "", "%", "\x00x", "\\", "é%C3%A9",
                 "&#x3c;&#60", "a;b,c^d", "%u0041%uFF1C", "\\u0041\\62\\", "x\\\n", "/* open", "a/*b*/c/*",
                 "/* x\n", "x\n", "/*\n", "a//b/./c/../d", "/a/b/.", "/a/..", "..\\x\\..\\y", "C:\\W\\..\\x",
                 "/.", "./", "/", "Mozilla/5.0 (X11; Linux) Firefox/130", "A  B", "a (b", "x /y"]


@pytest.mark.parametrize("name", sorted(JOINED))
def test_joined_transformations_give_each_values_own_result(name: str) -> None:
    # the Set prefilter runs them once over values joined by SEPARATOR: T(a + S + b) must be T(a) + S + T(b)
    out = JOINED[name](SEPARATOR.join(JOINED_VALUES))
    assert out.split(SEPARATOR) == [TRANSFORMS[name](v) for v in JOINED_VALUES]


@pytest.mark.parametrize(("value", "expected"), [
    ("%EF%BF%BD", "\ufffd"),  # valid UTF-8 of U+FFFD itself: kept as the character
    ("%FF", "\xff"),  # not UTF-8: one character per byte
    ("%C3%A9%FF", "\xc3\xa9\xff"),
    ("%C3%A9", "é"),
    ("%EF%BF%BD%FF", "\xef\xbf\xbd\xff"),  # holds U+FFFD's bytes but is not UTF-8 as a whole
])
def test_decoded_bytes_are_utf8_when_valid_else_one_character_per_byte(value: str, expected: str) -> None:
    assert TRANSFORMS["urlDecode"](value) == expected


@pytest.mark.parametrize("value", ["Mozilla/5.0 (X11; Linux)", "a  b", "a\tb", "x /y", "A'B", "plain", "a b"])
def test_cmdline_shortcut_agrees_with_the_three_substitutions(value: str) -> None:
    out = re.sub(r"[\\\"'^]", "", value)
    out = re.sub(r"[ ,;\t\r\n]+", " ", out)
    assert TRANSFORMS["cmdLine"](value) == re.sub(r" (?=[/(])", "", out).lower()


def _reference_compress(value: str) -> str:
    return re.sub(r"[ \t\n\r\f\v\xa0]+", " ", value)


def _reference_cmdline(value: str) -> str:
    out = re.sub(r"[\\\"'^]", "", value)
    out = re.sub(r"[ ,;\t\r\n]+", " ", out)
    return re.sub(r" (?=[/(])", "", out).lower()


def _reference_base64(value: str) -> str:
    clean = re.match(r"[A-Za-z0-9+/]*={0,2}", value.strip())
    data = clean.group(0) if clean else ""
    data += "=" * (-len(data) % 4)
    try:
        raw = binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def test_fast_paths_agree_with_the_plain_substitutions_on_generated_values() -> None:
    # compressWhitespace and cmdLine replace only the runs that change, base64Decode returns early where
    # a2b_base64 would raise: each against the straightforward form on generated text
    r = random.Random(14)
    alphabet = " \t\n\r\f\v\xa0,;\\\"'^/(aB=+9é"
    values = ["".join(r.choice(alphabet) for _ in range(r.randint(0, 12))) for _ in range(4000)]
    values += ["".join(r.choice("QUJD=+/ab \n") for _ in range(r.randint(0, 9))) for _ in range(4000)]
    for value in values:
        assert TRANSFORMS["compressWhitespace"](value) == _reference_compress(value), repr(value)
        assert TRANSFORMS["cmdLine"](value) == _reference_cmdline(value), repr(value)
        assert TRANSFORMS["base64Decode"](value) == _reference_base64(value), repr(value)
