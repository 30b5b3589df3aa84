"""Load `bastion.yaml`: YAML -> plain data with a position index -> pydantic models.

Every error is reported like a compiler's: `file:line:col: field.path: message`.
"""

from __future__ import annotations

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
    """A config that cannot be used; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
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


def read_yaml(path: Path) -> tuple[Any, Positions]:
    """Parse a YAML file into plain data and its position index; raise ConfigError with the YAML mark."""
    positions = Positions(str(path))
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False  # a duplicated key silently replacing a control is a config bug
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)  # never more than the limit in memory, whatever the file's size
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError([Diagnostic(str(path), 1, 1, "", f"file larger than {MAX_YAML_BYTES} bytes")])
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
    out = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *(part for part in err["loc"] if not _is_union_tag(part)))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling: unknown fields are errors, never ignored)"
        out.append(positions.diagnostic(loc, message))
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


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate the root model; cross-section rules are checked by `compile`."""
    import hashlib

    from bastion.config.models import BastionConfig

    path = Path(path)
    data, positions = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([positions.diagnostic((), "the config must be a YAML mapping")])
    try:
        model = BastionConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(pydantic_diagnostics(exc, positions)) from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LoadedConfig(path, model, positions, data, digest)
