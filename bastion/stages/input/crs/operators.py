"""The SecLang operators CRS request rules use, compiled once per rule.

An operator is called with one (transformed) value and returns the capture groups of the match (group 0
first) or None. Arguments with `%{tx.name}` macros are expanded per request through the `expand` callback.
Regexes run on RE2 (linear time, `(?sm)` as ModSecurity v3 compiles PCRE with DOTALL and MULTILINE). The
three CRS 3.3 patterns RE2 cannot compile are handled explicitly in `FALLBACKS`, never by running an unknown
pattern on a backtracking engine.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import libinjection
import re2

from bastion.stages.input.crs.injection import detect_sqli
from bastion.stages.input.crs.seclang import OperatorSpec, SecLangError

Groups = tuple[str, ...]
Expand = Callable[[str], str]
Match = Callable[[str, Expand], Groups | None]

RE2_OPTIONS = re2.Options()
RE2_OPTIONS.max_mem = 64 << 20  # the big CRS alternations need more than RE2's 8 MiB default
ANY = "^.*$"
BACKTRACK_LIMIT = 4096
"""Longest value a fallback (backtracking) regex sees; longer values are cut there (listed in docs)."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """How one CRS regex RE2 cannot compile is run instead: an RE2 `pattern` (an exact rewrite, or a
    necessary-condition prefilter when `confirm` is set) and a Python `re` pattern run on at most
    BACKTRACK_LIMIT characters when the prefilter matched."""

    pattern: str
    confirm: str | None
    why: str


# CRS 3.3 (Debian's 3.3.4). Keyed by rule id: the rewrite is only trusted for that rule's pattern.
FALLBACKS: dict[str, Fallback] = {
    "920120": Fallback(
        pattern=r"['\"=;]",
        confirm=r"(?<!&[aAoOuUyY]uml)(?<!&[aAeEiIoOuU]circ)(?<!&[eEiIoOuUyY]acute)(?<!&[aAeEiIoOuU]grave)"
                r"(?<!&[cC]cedil)(?<!&[aAnNoO]tilde)(?<!&amp)(?<!&apos);|['\"=]",
        why="negative look-behind: RE2 prefilter on the characters, then the look-behind split per alternative "
            "(fixed width each) in Python re",
    ),
    "942130": Fallback(
        pattern=r"(?i:[\s'\"`()]*?\b([\d\w]+)\b[\s'\"`()]*?(?:<(?:=(?:[\s'\"`()]*?[\d\w]+|>[\s'\"`()]*?(?:\b[\d\w]+"
                r"\b))|>?[\s'\"`()]*?[\d\w]+)|(?:not\s+(?:regexp|like)|is\s+not|>=?|!=|\^)[\s'\"`()]*?[\d\w]+|"
                r"(?:(?:sounds\s+)?like|r(?:egexp|like)|=)[\s'\"`()]*?(?:\b[\d\w]+\b)))",
        confirm=None,  # filled from the rule's own pattern
        why="back-references and negative look-ahead: RE2 prefilter with \\1 relaxed to any word, then the "
            "original pattern in Python re on at most BACKTRACK_LIMIT characters",
    ),
}


def possessive_to_greedy(pattern: str) -> str:
    """`x*+` / `x++` as `x*` / `x+`. Exact for 942260 (the class cannot match what follows it); for 920600
    (Accept header syntax) it also accepts whitespace before a parameter value (listed in docs)."""
    return re.sub(r"(?<!\\)([*+?}])\+", r"\1", pattern)


class Operators:
    """Builds operator functions; `data_dir` resolves `@pmFromFile` names."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def build(self, spec: OperatorSpec, rule_id: str, file: str, line: int, capture: bool = True) -> Match:
        """`capture`: whether the rule reads the groups (TX:0-9). Without it a static `@rx` only answers
        whether it matches (`("",)` or None), on RE2's DFA: asking for the groups' spans makes RE2 run its
        NFA, which costs far more on the big CRS patterns (920600 on the Accept header: ~150 k instructions)."""
        builder = getattr(self, f"_op_{spec.name}", None)
        if builder is None:
            raise SecLangError(file, line, f"unsupported operator @{spec.name}")
        if spec.name == "rx" and not capture and "%{" not in spec.argument and spec.argument != ANY \
                and not (rule_id in FALLBACKS and not _re2_ok(spec.argument)):
            builder = self._op_rx_exists
        match: Match = builder(spec.argument, rule_id, file, line)
        if spec.negated:
            inner = match
            return lambda value, expand: None if inner(value, expand) is not None else (value,)
        return match

    def set_source(self, spec: OperatorSpec, file: str, line: int) -> str | None:
        """The operator as one RE2 Set pattern (exact: `@rx` and `@pm`), or None when it cannot be one."""
        if spec.negated or "%{" in spec.argument:
            return None
        if spec.name == "rx":
            if spec.argument == ANY:
                return None  # matches every value: nothing to prefilter
            source = "(?sm)" + spec.argument
            return possessive_to_greedy(source) if "*+" in source or "++" in source else source
        if spec.name == "pm":
            return _phrases_source(spec.argument.split())
        if spec.name in ("pmFromFile", "pmf"):
            return _phrases_source(self._phrase_file(spec.argument, file, line))
        return None

    # --------------------------------------------------------------- patterns
    def _op_rx(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        if "%{" in argument:
            # the pattern depends on TX (which a request can fill): RE2 keeps it linear, an LRU bounds compiles
            compile_once = lru_cache(maxsize=64)(lambda pattern: compile_rx(pattern, rule_id, file, line))

            def dynamic(value: str, expand: Expand) -> Groups | None:
                return _groups(compile_once(expand(argument)).search(value))
            return dynamic
        if argument == ANY:  # CRS's "every value" (920450, 901318): the whole value is group 0, as under (?s)
            return lambda value, expand: (value,)
        fallback = FALLBACKS.get(rule_id)
        if fallback is not None and not _re2_ok(argument):
            prefilter = searcher(compile_rx(fallback.pattern, rule_id, file, line))
            confirm = re.compile(fallback.confirm or argument, re.DOTALL | re.MULTILINE)

            def bounded(value: str, expand: Expand) -> Groups | None:
                if prefilter(value) is None:
                    return None
                return _groups(confirm.search(value[:BACKTRACK_LIMIT]))
            return bounded
        search = searcher(compile_rx(argument, rule_id, file, line))
        return lambda value, expand: search(value)

    def _op_rx_exists(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        """`@rx` as a match/no-match answer: a one-pattern RE2 Set (DFA only; the same search semantics)."""
        compile_rx(argument, rule_id, file, line)  # the same errors as the full form
        source = "(?sm)" + argument
        if "*+" in argument or "++" in argument:
            source = possessive_to_greedy(source)
        one = re2.Set.SearchSet(RE2_OPTIONS)
        one.Add(source)
        one.Compile()
        exists = one._set.Match

        def matches(value: str, expand: Expand) -> Groups | None:
            return _NO_GROUPS if exists(value.encode()) else None
        return matches

    def _op_pm(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return _phrases(argument.split(), rule_id, file, line)

    def _op_pmf(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return self._op_pmFromFile(argument, rule_id, file, line)

    def _op_pmFromFile(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return _phrases(self._phrase_file(argument, file, line), rule_id, file, line)

    def _phrase_file(self, argument: str, file: str, line: int) -> list[str]:
        phrases: list[str] = []
        for name in argument.split():
            path = self.data_dir / name
            if not path.is_file():
                raise SecLangError(file, line, f"@pmFromFile: {name} not found beside the rules")
            for raw in path.read_text(encoding="utf-8").splitlines():
                text = raw.strip()
                if text and not text.startswith("#"):
                    phrases.append(text)
        return phrases

    # ------------------------------------------------------------ libinjection
    def _op_detectSQLi(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        def sqli(value: str, expand: Expand) -> Groups | None:
            fingerprint = detect_sqli(value.encode())
            return None if fingerprint is None else (fingerprint,)
        return sqli

    def _op_detectXSS(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        # the wheel's is_xss (its five C calls from Cython) costs less than one call through ctypes
        return lambda value, expand: (value,) if value and libinjection.is_xss(value)["is_xss"] else None

    # ----------------------------------------------------------------- strings
    def _op_within(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return lambda value, expand: (value,) if value in expand(argument) else None

    def _op_contains(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return lambda value, expand: (expand(argument),) if expand(argument) in value else None

    def _op_beginsWith(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return lambda value, expand: (value,) if value.startswith(expand(argument)) else None

    def _op_endsWith(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return lambda value, expand: (value,) if value.endswith(expand(argument)) else None

    def _op_streq(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return lambda value, expand: (value,) if value == expand(argument) else None

    # ----------------------------------------------------------------- numbers
    def _numeric(self, argument: str, test: Callable[[int, int], bool]) -> Match:
        return lambda value, expand: (value,) if test(_atoi(value), _atoi(expand(argument))) else None

    def _op_eq(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return self._numeric(argument, lambda a, b: a == b)

    def _op_ge(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return self._numeric(argument, lambda a, b: a >= b)

    def _op_gt(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return self._numeric(argument, lambda a, b: a > b)

    def _op_lt(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return self._numeric(argument, lambda a, b: a < b)

    def _op_le(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return self._numeric(argument, lambda a, b: a <= b)

    # -------------------------------------------------------------- validators
    def _op_validateUrlEncoding(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        bad = searcher(re2.compile(r"%(?:[^0-9a-fA-F]|.[^0-9a-fA-F]|.?$)"))
        return lambda value, expand: (value,) if "%" in value and bad(value) else None

    def _op_validateUtf8Encoding(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        # Values are decoded before the rules see them; bytes that were not UTF-8 arrive as U+FFFD.
        return lambda value, expand: (value,) if "\ufffd" in value else None

    def _op_validateByteRange(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        allowed = bytearray(256)
        for part in argument.replace(" ", "").split(","):
            if not part:
                continue
            low, _, high = part.partition("-")
            try:
                start, end = int(low), int(high or low)
            except ValueError:
                raise SecLangError(file, line, f"@validateByteRange: bad range {part!r}") from None
            for b in range(start, min(end, 255) + 1):
                allowed[b] = 1
        ascii_allowed = "".join(f"\\x{b:02x}" for b in range(128) if allowed[b])
        outside = searcher(re2.compile(f"[^{ascii_allowed}\\x80-\\x{{10ffff}}]" if any(allowed[128:])
                                       else f"[^{ascii_allowed}]"))
        return lambda value, expand: (value,) if outside(value) is not None else None

    def _op_ipMatch(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        try:
            networks = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in argument.split(",") if n.strip())
        except ValueError as exc:
            raise SecLangError(file, line, f"@ipMatch: {exc}") from None

        # the single addresses as written: REMOTE_ADDR is canonical text, so equality is a match without parsing
        exact = frozenset(str(n.network_address) for n in networks if n.num_addresses == 1)

        def ip(value: str, expand: Expand) -> Groups | None:
            if value in exact:
                return (value,)
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                return None
            return (value,) if any(address in n for n in networks if n.version == address.version) else None
        return ip

    def _op_unconditionalMatch(self, argument: str, rule_id: str, file: str, line: int) -> Match:
        return lambda value, expand: (value,)


def compile_rx(pattern: str, rule_id: str, file: str, line: int) -> re2._Regexp:
    """RE2 with ModSecurity v3's flags; possessive quantifiers rewritten; anything else RE2 refuses is an error."""
    source = "(?sm)" + pattern
    if "*+" in pattern or "++" in pattern:
        source = possessive_to_greedy(source)
    try:
        return re2.compile(source, RE2_OPTIONS)
    except re2.error as exc:
        raise SecLangError(file, line, f"rule {rule_id}: regex RE2 cannot run ({exc}); add a bounded fallback") \
            from None


_PERL_ONLY = re.compile(r"\(\?<?[!=]|\\[1-9]")


def _re2_ok(pattern: str) -> bool:
    if _PERL_ONLY.search(pattern):  # look-around or a back-reference: RE2 refuses these (without logging)
        return False
    try:
        re2.compile("(?sm)" + pattern, RE2_OPTIONS)
    except re2.error:
        return False
    return True


def _phrases(phrases: list[str], rule_id: str, file: str, line: int) -> Match:
    """`@pm`: any phrase as a substring, case-insensitive (ModSecurity's Aho-Corasick), in one RE2 pass."""
    if not phrases:
        raise SecLangError(file, line, f"rule {rule_id}: @pm without phrases")
    search = searcher(re2.compile(_phrases_source(phrases), RE2_OPTIONS))
    return lambda value, expand: search(value)


def _phrases_source(phrases: list[str]) -> str:
    return "(?i)(?:" + "|".join(re.escape(p) for p in phrases) + ")"


_UNANCHORED = re2._Anchor.UNANCHORED
_NO_GROUPS: Groups = ("",)


def searcher(compiled: re2._Regexp) -> Callable[[str], Groups | None]:
    """`compiled.search` as groups, in one call into RE2 on the UTF-8 bytes: the wrapper's generator and
    character-offset bookkeeping cost more than the match itself. Group texts are sliced from the bytes (RE2
    matches whole UTF-8 characters); an unset group is ''."""
    match = compiled._regexp.Match

    def search(text: str) -> Groups | None:
        data = text.encode()
        spans = match(_UNANCHORED, data, 0, len(data))
        if spans[0][0] < 0:
            return None
        return tuple(data[a:b].decode() if a >= 0 else "" for a, b in spans)
    return search


def _groups(match: re2._Match | re.Match[str] | None) -> Groups | None:
    if match is None:
        return None
    return (match.group(0), *(g or "" for g in match.groups()))


def _atoi(text: str) -> int:
    """C atoi as ModSecurity uses it: leading spaces and sign, then digits; anything else is 0."""
    if text.isdigit():
        return int(text)
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0
