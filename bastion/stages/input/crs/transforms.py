"""The SecLang `t:` transformations CRS uses, on Unicode text.

ModSecurity transforms bytes; Bastion transforms the decoded text of a value. For ASCII the results are the
same byte for byte. Where ModSecurity keeps only the low byte of a decoded code point (`%u0627` and the
UTF-8 letter U+0627 both become `'`), Bastion keeps the character: every such deliberate deviation is marked
`# deviation:` below and listed in docs/input.md. Each function returns its input object unchanged when it has
nothing to do, so the engine can tell "no change" by identity and skip matching the same text twice.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable

Transform = Callable[[str], str]

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_PCT = re.compile(r"(?:%[0-9a-fA-F]{2})+")
_PCT_U = re.compile(r"%[uU]([0-9a-fA-F]{4})")
_ENTITY = re.compile(r"&(?:#[xX]([0-9a-fA-F]+)|#([0-9]+)|(quot|amp|lt|gt|nbsp));?", re.IGNORECASE)
_NAMED = {"quot": '"', "amp": "&", "lt": "<", "gt": ">", "nbsp": "\xa0"}
_JS = re.compile(r"\\(?:u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|([0-7]{1,3})|(.))", re.DOTALL)
_JS_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_CSS = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\f\r]?|\n|(.))", re.DOTALL)
_WS = " \t\n\r\f\v\xa0"
_CMD_DROP = re.compile(r"[\\\"'^]")
_CMD_BEFORE = re.compile(r" (?=[/(])")
_WS_ANY = re.compile(r"[ \t\n\r\f\v\xa0]")
# the whitespace runs compressWhitespace changes (a lone space stays): the same result as `_WS_RUN.sub(" ")`,
# without a replacement per word
_WS_CHANGE = re.compile(r"[\t\n\r\f\v\xa0][ \t\n\r\f\v\xa0]*| [ \t\n\r\f\v\xa0]+")
_CMD_CHANGE = re.compile(r"[,;\t\r\n][ ,;\t\r\n]*| [ ,;\t\r\n]+")  # likewise for cmdLine's runs
_WS_RUN = re.compile(r"[ \t\n\r\f\v\xa0]+")
_C_COMMENT = re.compile(r"/\*.*?(?:\*/|$)", re.DOTALL)
_ALL_COMMENTS = re.compile(r"/\*.*?(?:\*/|$)|<!--.*?(?:-->|$)|--.*$|#.*$", re.DOTALL)
_ESCAPES = re.compile(r"\\(?:x([0-9a-fA-F]{1,2})|([0-7]{1,3})|(.))", re.DOTALL)
_C_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
             "?": "?", "'": "'", '"': '"'}


def _bytes_text(raw: bytes) -> str:
    """Decoded bytes as text: UTF-8 when valid, else one character per byte (as ModSecurity sees them)."""
    # the "replace" decoder raises nothing (a UnicodeDecodeError costs more than the decoding): without a
    # U+FFFD in its result the bytes were valid UTF-8 and the result is the strict decoding's; with one, they
    # were not, unless the bytes hold U+FFFD itself (then the strict decoding decides)
    text = raw.decode("utf-8", "replace")
    if "\ufffd" not in text:
        return text
    if b"\xef\xbf\xbd" not in raw:  # every U+FFFD stands for an invalid sequence: not UTF-8
        return raw.decode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _wide(code: int) -> str:
    # ModSecurity maps fullwidth ASCII (U+FF01..U+FF5E) to ASCII, as here.
    if 0xFF01 <= code <= 0xFF5E:
        return chr(code - 0xFF00 + 0x20)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"  # a lone surrogate (`\ud800`, `%uD800`) is no character: U+FFFD, as invalid UTF-8 is
    return chr(code)  # deviation: ModSecurity keeps the low byte (U+0627 -> 0x27 `'`)


def url_decode(value: str) -> str:
    """`t:urlDecode`: %XX sequences (UTF-8 runs as characters) and `+` as space; a bad %-escape stays."""
    if "%" not in value and "+" not in value:
        return value
    out = value.replace("+", " ")
    return _PCT.sub(lambda m: _bytes_text(bytes.fromhex(m.group(0).replace("%", ""))), out) if "%" in out else out


def url_decode_uni(value: str) -> str:
    """`t:urlDecodeUni`: urlDecode plus IIS `%uXXXX`."""
    if "%" not in value and "+" not in value:
        return value
    if "%u" in value or "%U" in value:
        value = _PCT_U.sub(lambda m: _wide(int(m.group(1), 16)).replace("%", "%25"), value)
    return url_decode(value)


def html_entity_decode(value: str) -> str:
    """`t:htmlEntityDecode`: `&#xHH;`, `&#DDD;` and the five names ModSecurity knows; `;` optional."""
    if "&" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        hexa, dec, name = m.groups()
        if name:
            return _NAMED[name.lower()]
        code = int(hexa, 16) if hexa else int(dec)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else m.group(0)

    return _ENTITY.sub(one, value)


def js_decode(value: str, _pattern: re.Pattern[str] = _JS) -> str:
    """`t:jsDecode`: `\\uHHHH`, `\\xHH`, octal, the C escapes, and `\\c` as `c`."""
    if "\\" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        uni, hexa, octal, other = m.groups()
        if uni:
            return _wide(int(uni, 16))
        if hexa:
            return chr(int(hexa, 16))
        if octal:
            return chr(int(octal, 8) & 0xFF)
        return _JS_SIMPLE.get(other, other)

    return _pattern.sub(one, value)


def css_decode(value: str, _pattern: re.Pattern[str] = _CSS) -> str:
    """`t:cssDecode`: `\\` + 1-6 hex digits (one trailing space eaten), `\\`-newline removed, `\\c` as `c`."""
    if "\\" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        hexa, other = m.groups()
        if hexa:
            code = int(hexa, 16)
            return _wide(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else ""
        return other or ""

    return _pattern.sub(one, value)


def utf8_to_unicode(value: str) -> str:
    """`t:utf8toUnicode`: NUL characters dropped (ModSecurity v3 does so), text otherwise unchanged.
    deviation: ModSecurity rewrites each non-ASCII character as `%uXXXX` text, which a later urlDecodeUni
    turns into its low byte (Arabic U+0627 becomes `'`); values here are already Unicode text."""
    return value.replace("\x00", "") if "\x00" in value else value


def lowercase(value: str) -> str:
    # lower() has an ASCII fast path, islower() has none (a Unicode table lookup per character)
    low = value.lower()
    return value if low == value else low


def remove_nulls(value: str) -> str:
    return value.replace("\x00", "") if "\x00" in value else value


def remove_whitespace(value: str) -> str:
    if _WS_ANY.search(value) is None:
        return value
    return _WS_RUN.sub("", value)


def compress_whitespace(value: str) -> str:
    # a run that changes holds a whitespace character other than the space, or two spaces (substring tests
    # are memchr-fast; the regex search tries its class at every position)
    if "  " not in value and not _has_any(value, _WS_OTHER):
        return value
    return _WS_CHANGE.sub(" ", value)


def _has_any(value: str, chars: tuple[str, ...]) -> bool:
    for c in chars:  # noqa: SIM110 - a plain loop: any() over a generator costs a frame per item
        if c in value:
            return True
    return False


_WS_OTHER = ("\t", "\n", "\r", "\f", "\v", "\xa0")
_CMD_SPECIAL = ("\\", '"', "'", "^", ",", ";", "\t", "\r", "\n", "  ", " /", " (")
"""Whatever cmdLine's three substitutions would change: absent, cmdLine is only `lower()`."""


def cmd_line(value: str) -> str:
    """`t:cmdLine`: drop `\\ " ' ^`, `,` `;` and whitespace runs as one space, no space before `/` and `(`,
    lowercase (the same steps as ModSecurity's loop, as three linear substitutions)."""
    if not _has_any(value, _CMD_SPECIAL):  # no character to drop, no run to compress, no space to remove
        low = value.lower()
        return value if low == value else low
    out = _CMD_DROP.sub("", value)
    out = _CMD_CHANGE.sub(" ", out)
    out = _CMD_BEFORE.sub("", out).lower()
    return value if out == value else out


def normalize_path(value: str) -> str:
    """`t:normalizePath`: collapse `//`, drop `./`, resolve `../` (a leading `../` stays)."""
    if "/" not in value or ("//" not in value and "./" not in value and not value.endswith("/.")
                            and not value.endswith("/..")):
        return value
    absolute = value.startswith("/")
    trailing = value.endswith("/") or value.endswith("/.") or value.endswith("/..")
    parts: list[str] = []
    for seg in value.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not absolute:
                parts.append("..")
            continue
        parts.append(seg)
    out = ("/" if absolute else "") + "/".join(parts)
    if trailing and parts:
        out += "/"
    return out


def normalize_path_win(value: str) -> str:
    return normalize_path(value.replace("\\", "/") if "\\" in value else value)


def replace_comments(value: str) -> str:
    """`t:replaceComments`: each `/* ... */` (or an unterminated `/*` to the end) becomes one space."""
    return _C_COMMENT.sub(" ", value) if "/*" in value else value


def remove_comments(value: str) -> str:
    """`t:removeComments`: `/* */`, `<!-- -->`, and `--` or `#` to the end, removed."""
    if not any(m in value for m in ("/*", "<!--", "--", "#")):
        return value
    return _ALL_COMMENTS.sub("", value)


def base64_decode(value: str) -> str:
    """`t:base64Decode`: the decoded bytes (UTF-8 text when valid); what is not base64 ends the input."""
    clean = _BASE64.match(value.strip())
    data = clean.group(0) if clean else ""
    if len(data.rstrip("=")) % 4 == 1:  # one character past a quantum: a2b_base64 would raise
        return ""
    data += "=" * (-len(data) % 4)
    try:
        return _bytes_text(binascii.a2b_base64(data))
    except (binascii.Error, ValueError):
        return ""


def hex_decode(value: str) -> str:
    try:
        return _bytes_text(bytes.fromhex(value[: len(value) // 2 * 2]))
    except ValueError:
        return value


def hex_encode(value: str) -> str:
    return _raw(value).hex()


def sha1(value: str) -> str:
    return hashlib.sha1(_raw(value), usedforsecurity=False).digest().decode("latin-1")


def escape_seq_decode(value: str, _pattern: re.Pattern[str] = _ESCAPES) -> str:
    """`t:escapeSeqDecode`: ANSI C escapes (`\\n`, `\\x41`, `\\101`)."""
    if "\\" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        hexa, octal, other = m.groups()
        if hexa:
            return chr(int(hexa, 16))
        if octal:
            return chr(int(octal, 8) & 0xFF)
        return _C_SIMPLE.get(other, "\\" + other)

    return _pattern.sub(one, value)


def length(value: str) -> str:
    """`t:length`: the length in bytes of the UTF-8 value, as ModSecurity counts it."""
    return str(len(value.encode("utf-8", "replace")))


def trim(value: str) -> str:
    return value.strip(_WS)


def _raw(value: str) -> bytes:
    try:
        return value.encode("latin-1") if value.isascii() or max(value) <= "\xff" else value.encode("utf-8")
    except UnicodeEncodeError:  # pragma: no cover - covered by the max() test above
        return value.encode("utf-8")


TRANSFORMS: dict[str, Transform] = {
    "urlDecode": url_decode,
    "urlDecodeUni": url_decode_uni,
    "htmlEntityDecode": html_entity_decode,
    "jsDecode": js_decode,
    "cssDecode": css_decode,
    "utf8toUnicode": utf8_to_unicode,
    "lowercase": lowercase,
    "removeNulls": remove_nulls,
    "removeWhitespace": remove_whitespace,
    "compressWhitespace": compress_whitespace,
    "cmdLine": cmd_line,
    "normalizePath": normalize_path,
    "normalisePath": normalize_path,
    "normalizePathWin": normalize_path_win,
    "normalisePathWin": normalize_path_win,
    "replaceComments": replace_comments,
    "removeComments": remove_comments,
    "base64Decode": base64_decode,
    "hexDecode": hex_decode,
    "hexEncode": hex_encode,
    "sha1": sha1,
    "escapeSeqDecode": escape_seq_decode,
    "length": length,
    "trim": trim,
}
"""Every supported `t:` name (both spellings ModSecurity accepts). `t:none` clears the chain."""


SEPARATOR = "\x1b"
"""Joins the values of one request variable group for `JOINED` transformations: a control character (ESC) no
transformation below consumes, produces from its neighbours or reorders (it is not whitespace, not a path,
comment or escape character, and the escape decoders' JOINED forms exclude it). It is in Latin-1, so ASCII
values joined with it stay one-byte text: `lower()`, the regexes and the UTF-8 encoding for RE2 take their
ASCII fast paths (`\uffff` made every joined text two bytes a character). A value that holds it, or a step
that produces one (`%1b`, `&#27;`, `\x1b`), is detected by counting separators and transformed value by value."""
_JS_JOINED = re.compile(r"\\(?:u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|([0-7]{1,3})|([^\x1b]))", re.DOTALL)
_CSS_JOINED = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\f\r]?|\n|([^\x1b]))", re.DOTALL)
_ESCAPES_JOINED = re.compile(r"\\(?:x([0-9a-fA-F]{1,2})|([0-7]{1,3})|([^\x1b]))", re.DOTALL)

_C_COMMENT_JOINED = re.compile(r"/\*[^\x1b]*?(?:\*/|(?=\n?(?:\x1b|\Z)))")
"""replaceComments' pattern ending an unterminated comment at its own value's end (`$` without MULTILINE:
the end, or before a last newline), never in the next value."""


def _replace_comments_joined(value: str) -> str:
    return _C_COMMENT_JOINED.sub(" ", value) if "/*" in value else value


def _normalize_path_joined(value: str) -> str:
    # each value's own early return, read on the joined text: no `//` or `./` anywhere (SEPARATOR is neither
    # `/` nor `.`, so none spans two values) and no value ending in `/.` or `/..`
    if "/" not in value or ("//" not in value and "./" not in value and "/.\x1b" not in value
                            and "/..\x1b" not in value and not value.endswith("/.") and not value.endswith("/..")):
        return value
    return SEPARATOR.join(normalize_path(v) for v in value.split(SEPARATOR))


def _normalize_path_win_joined(value: str) -> str:
    return _normalize_path_joined(value.replace("\\", "/") if "\\" in value else value)


JOINED: dict[str, Transform] = {
    **{name: TRANSFORMS[name] for name in (
        "urlDecode", "urlDecodeUni", "htmlEntityDecode", "utf8toUnicode", "lowercase", "removeNulls",
        "removeWhitespace", "compressWhitespace", "cmdLine")},
    # the escape decoders must not take the separator as the character an escape stands for
    "jsDecode": lambda value: js_decode(value, _JS_JOINED),
    "cssDecode": lambda value: css_decode(value, _CSS_JOINED),
    "escapeSeqDecode": lambda value: escape_seq_decode(value, _ESCAPES_JOINED),
    "replaceComments": _replace_comments_joined,
    "normalizePath": _normalize_path_joined,
    "normalisePath": _normalize_path_joined,
    "normalizePathWin": _normalize_path_win_joined,
    "normalisePathWin": _normalize_path_win_joined,
}
"""The transformations that work character by character or on runs that SEPARATOR ends: applied once to values
joined by SEPARATOR they give each value's own result, joined by SEPARATOR (`T(a + S + b) == T(a) + S + T(b)`),
so the RE2 Set prefilter transforms a whole group in one call per step instead of one per value. Path
normalisation runs per value only when some value needs it; replaceComments ends a comment at its value's end.
Not here: removeComments, base64/hex, sha1, length and trim."""
