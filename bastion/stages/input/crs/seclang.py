"""A reader for the part of ModSecurity's SecLang that the OWASP CRS request rules use.

It turns rule files into plain values (`RuleSpec`, `VarSpec`, `OperatorSpec`, `Action`) and nothing more; what
the values mean is `compiler.py`'s business. Any directive, variable, operator or action outside the supported
subset is a `SecLangError` naming file:line, so `bastion validate` can refuse the rule set instead of running
it with rules silently missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class SecLangError(ValueError):
    """A construct the reader cannot parse or the engine does not support, with its file and line."""

    def __init__(self, file: str, line: int, why: str) -> None:
        super().__init__(f"{file}:{line}: {why}")
        self.file = file
        self.line = line
        self.why = why


@dataclass(frozen=True, slots=True)
class VarSpec:
    """One target of a rule: `ARGS`, `!REQUEST_COOKIES:/__utm/`, `&TX:paranoia_level`, `XML:/*`."""

    collection: str          # upper-case name: ARGS, REQUEST_HEADERS, TX ...
    selector: str | None     # a literal key (case-insensitive) or a /regex/ (kept with its slashes)
    exclude: bool = False    # `!`: remove these keys from the collection's other targets
    count: bool = False      # `&`: the number of matching keys instead of their values

    @property
    def is_regex(self) -> bool:
        return self.selector is not None and len(self.selector) >= 2 and self.selector[0] == "/" \
            and self.selector[-1] == "/"


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """`@rx ...`, `!@eq 0`: the name, its argument (macros not yet expanded) and the negation."""

    name: str
    argument: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Action:
    """One action of a rule: `setvar:'tx.x=+5'` is Action("setvar", "tx.x=+5")."""

    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A SecRule or SecAction (variables empty, operator `@unconditionalMatch`) with its chained rules."""

    file: str
    line: int
    variables: tuple[VarSpec, ...]
    operator: OperatorSpec
    actions: tuple[Action, ...]
    chained: tuple[RuleSpec, ...] = ()

    def action(self, name: str) -> str | None:
        for action in self.actions:
            if action.name == name:
                return action.value
        return None

    def all(self, name: str) -> list[str]:
        return [a.value or "" for a in self.actions if a.name == name]


@dataclass(frozen=True, slots=True)
class Marker:
    """`SecMarker NAME`: a target for `skipAfter`."""

    file: str
    line: int
    name: str


@dataclass(slots=True)
class RuleFile:
    """The rules and markers of one file, in order, and its `SecComponentSignature` if any."""

    path: str
    items: list[RuleSpec | Marker] = field(default_factory=list)
    signature: str | None = None


# Directives that configure a ModSecurity server rather than detection: accepted and ignored, because the
# gateway owns these decisions (body limits, audit logging) in its own config.
_IGNORED_DIRECTIVES = frozenset({
    "SecDefaultAction", "SecCollectionTimeout", "SecRuleEngine", "SecRequestBodyAccess", "SecResponseBodyAccess",
    "SecRequestBodyLimit", "SecRequestBodyNoFilesLimit", "SecRequestBodyLimitAction", "SecAuditEngine",
    "SecAuditLog", "SecAuditLogParts", "SecAuditLogType", "SecDebugLog", "SecDebugLogLevel", "SecTmpDir",
    "SecDataDir", "SecArgumentSeparator", "SecCookieFormat", "SecUnicodeMapFile", "SecStatusEngine",
    "SecResponseBodyMimeType", "SecResponseBodyLimit", "SecResponseBodyLimitAction", "SecPcreMatchLimit",
    "SecPcreMatchLimitRecursion", "SecAuditLogRelevantStatus", "SecAuditLogStorageDir",
})


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with `\\` continuations joined, comments and blanks dropped, each with its first line number."""
    start, parts = 0, list[str]()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not parts:
            start = number
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        yield start, " ".join(p.strip() for p in parts)
        parts = []
    if parts:
        yield start, " ".join(p.strip() for p in parts)


def split_arguments(text: str, file: str, line: int) -> list[str]:
    """Directive arguments: double-quoted (with `\\"` escapes kept as `"`) or bare words."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == '"':
            i += 1
            buf = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] == '"':
                    buf.append('"')
                    i += 2
                    continue
                buf.append(text[i])
                i += 1
            if i >= n:
                raise SecLangError(file, line, "unterminated quoted argument")
            out.append("".join(buf))
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace():
                j += 1
            out.append(text[i:j])
            i = j
    return out


def parse_variables(text: str, file: str, line: int) -> tuple[VarSpec, ...]:
    """`REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|ARGS:'a|b'`: `|` inside /regex/ or quotes does not split."""
    items: list[str] = []
    buf: list[str] = []
    in_regex = in_quote = False
    for i, ch in enumerate(text):
        if ch == "'" and not in_regex:
            in_quote = not in_quote
            continue
        if ch == "/" and not in_quote and ((buf and buf[-1] == ":") or in_regex):
            if in_regex and i + 1 < len(text) and text[i + 1] not in "|":
                buf.append(ch)  # a slash inside the regex (XML:/*, /a/b/)
                continue
            in_regex = not in_regex
        if ch == "|" and not in_regex and not in_quote:
            items.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    items.append("".join(buf))
    out = []
    for item in items:
        item = item.strip()
        exclude = item.startswith("!")
        count = item.startswith("&")
        name = item.lstrip("!&")
        collection, _, selector = name.partition(":")
        if not collection.replace("_", "").isalnum():
            raise SecLangError(file, line, f"unreadable variable {item!r}")
        out.append(VarSpec(collection.upper(), selector or None, exclude, count))
    return tuple(out)


def parse_operator(text: str) -> OperatorSpec:
    """`@rx ^a`, `!@eq 0`, or a bare regex (an implicit `@rx`)."""
    negated = text.startswith("!")
    body = text[1:] if negated else text
    if not body.startswith("@"):
        return OperatorSpec("rx", body, negated)
    name, _, argument = body[1:].partition(" ")
    return OperatorSpec(name, argument, negated)


def parse_actions(text: str, file: str, line: int) -> tuple[Action, ...]:
    """`id:1,phase:2,msg:'a, b',setvar:'tx.x=+1'`: commas inside single quotes do not split."""
    out: list[Action] = []
    buf: list[str] = []
    quoted = False
    for ch in text + ",":
        if ch == "'":
            quoted = not quoted
            continue
        if ch == "," and not quoted:
            token = "".join(buf).strip()
            buf = []
            if not token:
                continue
            name, sep, value = token.partition(":")
            out.append(Action(name.strip(), value.strip() if sep else None))
            continue
        buf.append(ch)
    if quoted:
        raise SecLangError(file, line, "unterminated quote in actions")
    return tuple(out)


def parse_file(path: Path) -> RuleFile:
    """Every rule, action and marker of one file, chains assembled."""
    file = path.name
    result = RuleFile(str(path))
    pending: list[RuleSpec] = []  # a rule with `chain` and the rules chained to it so far
    for line, text in logical_lines(_text(path)):
        directive, _, rest = text.partition(" ")
        args = split_arguments(rest, file, line)
        if directive == "SecRule":
            if len(args) not in (2, 3):
                raise SecLangError(file, line, f"SecRule takes 2 or 3 arguments, got {len(args)}")
            rule = RuleSpec(file, line, parse_variables(args[0], file, line), parse_operator(args[1]),
                            parse_actions(args[2], file, line) if len(args) == 3 else ())
        elif directive == "SecAction":
            if len(args) != 1:
                raise SecLangError(file, line, "SecAction takes 1 argument")
            rule = RuleSpec(file, line, (), OperatorSpec("unconditionalMatch", ""), parse_actions(args[0], file, line))
        elif directive == "SecMarker":
            if pending:
                raise SecLangError(file, line, "SecMarker inside a chain")
            result.items.append(Marker(file, line, args[0] if args else ""))
            continue
        elif directive == "SecComponentSignature":
            result.signature = args[0] if args else None
            continue
        elif directive in _IGNORED_DIRECTIVES:
            continue
        else:
            raise SecLangError(file, line, f"unsupported directive {directive}")
        pending.append(rule)
        if rule.action("chain") is None and not any(a.name == "chain" for a in rule.actions):
            head, *rest_rules = pending
            result.items.append(_with_chain(head, tuple(rest_rules)))
            pending = []
    if pending:
        raise SecLangError(file, pending[-1].line, "the last rule of the file has `chain` but nothing follows")
    return result


def _text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:  # found by fuzz/rules.py: was a traceback, not a diagnostic
        line = len((raw[:err.start].decode("utf-8") + "x").splitlines())  # numbered as logical_lines numbers
        raise SecLangError(path.name, line, "not UTF-8") from None


def _with_chain(head: RuleSpec, chained: tuple[RuleSpec, ...]) -> RuleSpec:
    return RuleSpec(head.file, head.line, head.variables, head.operator, head.actions, chained)
