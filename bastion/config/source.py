"""Config source files: YAML read into plain data with a position index, and diagnostics that point into it.

Every error is reported like a compiler's: `file:line:col: field.path: message`. The loader (`loader.py`) and
the `include:` expansion (`include.py`) both read files through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

if TYPE_CHECKING:
    from bastion.config.models import BastionConfig

Loc = tuple[str | int, ...]

# Config and OpenAPI files are read whole and expanded into plain data: bound both (a YAML alias "bomb" of a few
# hundred bytes expands to billions of nodes, a deep nesting exhausts the stack). Refused to load above these.
# Without aliases a document has fewer values than bytes, so the value budget follows the file's size.
MAX_YAML_BYTES = 8 * 1024 * 1024
YAML_NODES_BASE = 100_000  # values allowed besides one per byte of the file
MAX_YAML_DEPTH = 200


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about a config: an error refuses the config, a warning is reported."""

    file: str
    line: int
    col: int
    field: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        label = "" if self.severity == "error" else f"{self.severity}: "
        return f"{where}: {label}{self.field}: {self.message}" if self.field else f"{where}: {label}{self.message}"


class ConfigError(Exception):
    """A config that cannot be used; carries every diagnostic found, each once.

    With errors present, warnings are left out: they were computed from a config that did not compile (a route
    whose policy failed makes its exception look unused), so they would mislead until the errors are fixed.
    """

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        if any(d.severity == "error" for d in diagnostics):
            diagnostics = [d for d in diagnostics if d.severity == "error"]
        diagnostics = list(dict.fromkeys(diagnostics))  # one typo, merged into several routes: one error
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = diagnostics


@dataclass(slots=True)
class Positions:
    """Maps a field path inside a YAML document to its line and column (1-based)."""

    file: str
    index: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def of(self, loc: Loc) -> tuple[int, int]:
        # the deepest known ancestor: a missing field points at its parent mapping
        for cut in range(len(loc), -1, -1):
            pos = self.index.get(tuple(loc[:cut]))
            if pos:
                return pos
        return (1, 1)

    def diagnostic(self, loc: Loc, message: str, severity: str = "error") -> Diagnostic:
        line, col = self.of(loc)
        return Diagnostic(self.file, line, col, dotted(loc), message, severity)


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _plain(node: Any, loc: Loc, positions: Positions, budget: list[int]) -> Any:
    """ruamel's round-trip nodes -> dict/list/scalars, recording where each key and item starts.

    `budget` holds the nodes still allowed: aliases are expanded here, so they are counted as often as used."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge(f"more values than the file has bytes + {YAML_NODES_BASE} (aliases expanded)")
    if len(loc) >= MAX_YAML_DEPTH:  # this node is at depth len(loc) + 1
        raise _TooLarge(f"nested deeper than {MAX_YAML_DEPTH}")
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            line, col = node.lc.key(key)
            positions.index[(*loc, key)] = (line + 1, col + 1)
            out[str(key)] = _plain(value, (*loc, str(key)), positions, budget)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            line, col = node.lc.item(i)
            positions.index[(*loc, i)] = (line + 1, col + 1)
            items.append(_plain(value, (*loc, i), positions, budget))
        return items
    if node is None or isinstance(node, bool | int | float | str):
        return node
    return node  # dates and timestamps stay as parsed; pydantic checks them


def read_yaml(path: Path, max_bytes: int | None = None) -> tuple[Any, Positions]:
    """Parse a YAML file of at most `max_bytes` (default `MAX_YAML_BYTES`) into plain data and its position
    index; raise ConfigError with the YAML mark."""
    limit = MAX_YAML_BYTES if max_bytes is None else max_bytes
    positions = Positions(str(path))
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False  # a duplicated key silently replacing a control is a config bug
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)  # never more than the limit in memory, whatever the file's size
        if len(raw) > limit:
            raise ConfigError([Diagnostic(str(path), 1, 1, "", f"file larger than {limit} bytes")])
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError([Diagnostic(str(path), 1, 1, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Diagnostic(str(path), 1, 1, "", "not valid UTF-8")]) from None
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError([Diagnostic(str(path), line, col, "", f"YAML: {exc.problem or exc}")]) from None
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. duplicate anchors)
        raise ConfigError([Diagnostic(str(path), 1, 1, "", f"YAML: {exc}")]) from None
    positions.index[()] = (1, 1)
    try:
        return _plain(data, (), positions, [YAML_NODES_BASE + len(raw)]), positions
    except _TooLarge as exc:
        raise ConfigError([Diagnostic(str(path), 1, 1, "", f"YAML: {exc}")]) from None


def pydantic_diagnostics(exc: ValidationError, positions: Positions, prefix: Loc = ()) -> list[Diagnostic]:
    """One diagnostic per error, at the line of the field. An unknown field says which known field it most
    likely means; when that field is a required one, its "Field required" error is the same mistake and is
    left out."""
    errors = exc.errors(include_url=False)
    locs = [(*prefix, *(part for part in err["loc"] if not _is_union_tag(part))) for err in errors]
    unknown = {loc: _written_at(loc, positions) for loc, err in zip(locs, errors, strict=True)
               if err["type"] == "extra_forbidden"}
    meant: dict[Loc, str] = {}
    for loc, where in unknown.items():
        if not loc:  # an extra value with no field name (found by fuzz/loaders.py): nothing to suggest
            continue
        guess = did_you_mean(str(loc[-1]), known_fields(where[:-1]))
        if guess:
            meant[loc] = guess
    typo_for = {(*loc[:-1], guess) for loc, guess in meant.items()}
    out = []
    for loc, err in zip(locs, errors, strict=True):
        if err["type"] == "missing" and loc in typo_for:
            continue
        if err["type"] == "extra_forbidden":
            hint = f"; did you mean `{meant[loc]}`?" if loc in meant else " (check the spelling: unknown fields " \
                "are errors, never ignored)"
            out.append(positions.diagnostic(unknown[loc], f"unknown field{hint}"))
            continue
        out.append(positions.diagnostic(loc, readable(err["msg"])))
    return out


_LIST_REPR = re.compile(r"\[((?:'[^'\n]*'(?:, )?)+)\]")


def readable(message: str) -> str:
    """A pydantic or validator message without Python in it: no `Value error, ` prefix, no class names, lists
    as YAML writes them (`[a, b]`, not `['a', 'b']`)."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    message = re.sub(r"Input should be a valid dictionary or instance of \w+",
                     "expected a mapping of fields (`{name: ..., ...}`)", message)
    return _LIST_REPR.sub(lambda m: "[" + m.group(1).replace("'", "") + "]", message)


def _written_at(loc: Loc, positions: Positions) -> Loc:
    """Where an unknown key really is. A route's policy is validated merged with its API's and class's, so a typo
    in the API's `policy:` surfaces under each route; point at the layer whose YAML holds the key."""
    if loc in positions.index or "policy" not in loc:
        return loc
    cut = len(loc) - 1 - list(reversed(loc)).index("policy")
    rest = loc[cut + 1:]
    for candidate in ((*loc[:2], "policy", *rest), (*loc[:cut + 1], *rest)):
        if candidate in positions.index:
            return candidate
    return loc


def did_you_mean(name: str, fields: list[str]) -> str | None:
    """The known field `name` is most likely a misspelling of, if any is close enough."""
    import difflib

    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    return close[0] if close else None


def known_fields(loc: Loc) -> list[str]:
    """The field names the model at `loc` accepts (a policy is a class baseline), or [] when unknown."""
    from typing import get_args

    from pydantic import BaseModel

    from bastion.config.models import Baseline, BastionConfig

    types: list[Any] = [BastionConfig]
    for part in loc:
        nxt: list[Any] = []
        for typ in types:
            if isinstance(part, int) or not (isinstance(typ, type) and issubclass(typ, BaseModel)):
                nxt += [a for a in get_args(typ) if a is not type(None)][-1:] if isinstance(part, int) or \
                    get_args(typ) else []
                continue
            if part == "policy" and typ.__name__ in ("ApiConfig", "RouteConfig"):
                nxt.append(Baseline)
                continue
            info = typ.model_fields.get(str(part))
            if info is not None:
                nxt.append(info.annotation)
        types = _unwrap(nxt)
    names: list[str] = []
    for typ in types:
        if isinstance(typ, type) and issubclass(typ, BaseModel):
            names += [info.alias or name for name, info in typ.model_fields.items()]  # as written in YAML
    return names


def _unwrap(types: list[Any]) -> list[Any]:
    """Optional, unions and Annotated -> their members."""
    from typing import Annotated, Union, get_args, get_origin

    out: list[Any] = []
    for typ in types:
        origin = get_origin(typ)
        if origin is Annotated:
            out += _unwrap([get_args(typ)[0]])
        elif origin is Union or type(typ).__name__ == "UnionType":
            out += _unwrap([a for a in get_args(typ) if a is not type(None)])
        else:
            out.append(typ)
    return out


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the union member's type name to `loc` (e.g. 'IPv4Network'); it names no YAML field
    return isinstance(part, str) and part[:1].isupper()


@dataclass(slots=True)
class LoadedConfig:
    """A validated config, where it came from and how to point at its fields."""

    path: Path
    model: BastionConfig  # imported lazily at run time: stage config models import this module
    positions: Positions
    raw: dict[str, Any]
    text_hash: str
