"""A config in several files: the root `bastion.yaml` includes others, and says who may define what in them.

```yaml
# bastion.yaml (the platform team's)
version: 1
include: [classes.yaml, apis/*.yaml]
owners:
  classes.yaml: {sections: [classes, providers, consumers, exceptions]}   # the security team's file
  apis/orders.yaml: {apis: [team-orders@example.com]}                      # may define only these owners' APIs
  apis/payments-*.yaml: {apis: [team-payments@example.com]}
gateway: {...}
```

Without `include:`, a `bastion.d/` directory beside the root file is included (`bastion.d/*.yaml` and
`bastion.d/*/*.yaml`). Included files hold `classes`, `providers`, `consumers`, `apis` and `exceptions`;
they are merged into one document before validation. Every field keeps the file and line it was written at,
so each error points there. With `owners`, an included file may define only the sections its entry allows
(default: `apis`) and only APIs whose `owner` it lists; a file no entry matches may define nothing. The root
file may define anything.
"""

from __future__ import annotations

import fnmatch
import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bastion.config.owners import FileOwners
from bastion.config.source import (
    ConfigError,
    Diagnostic,
    LoadedConfig,
    Loc,
    Positions,
    pydantic_diagnostics,
    read_yaml,
)

MERGED_MAPS = ("classes",)  # name -> definition: a name defined twice is an error
MERGED_LISTS = ("apis", "consumers", "exceptions")  # concatenated in file order
PROVIDER_KINDS = ("jwt", "introspection", "ssf")  # `providers.<kind>` lists, concatenated
SECTIONS = (*MERGED_MAPS, *MERGED_LISTS, "providers")
MAX_FILES = 1000


@dataclass(slots=True)
class FilePositions(Positions):
    """Positions of a document merged from several files: each location also knows its file."""

    files: dict[Loc, str] = field(default_factory=dict)
    root_dir: Path | None = None

    def file_of(self, loc: Loc) -> str:
        for cut in range(len(loc), -1, -1):
            name = self.files.get(tuple(loc[:cut]))
            if name is not None:
                return name
        return self.file

    def diagnostic(self, loc: Loc, message: str, severity: str = "error") -> Diagnostic:
        diag = Positions.diagnostic(self, loc, message, severity)
        return Diagnostic(self.file_of(loc), diag.line, diag.col, diag.field, diag.message, severity)

    def where(self, loc: Loc) -> str:
        """`apis/orders.yaml:12`: the file (relative to the root's directory) and line of a location."""
        name = Path(self.file_of(loc))
        if self.root_dir is not None and name.resolve().is_relative_to(self.root_dir):
            name = name.resolve().relative_to(self.root_dir)
        return f"{name}:{self.of(loc)[0]}"


def root_file(path: Path) -> Path:
    """`-c conf/` means `conf/bastion.yaml`."""
    return path / "bastion.yaml" if path.is_dir() else path


def include_files(path: Path, data: dict[str, Any], positions: Positions) -> tuple[dict[str, Any], FilePositions,
                                                                                   list[Path]]:
    """Merge the root's `include:` files into its data; returns the data, positions that know each location's
    file, and every file read (the root first). Raises ConfigError with every problem found."""
    root_dir = path.parent.resolve()
    merged = FilePositions(positions.file, dict(positions.index), {(): positions.file}, root_dir)
    patterns = data.get("include")
    if patterns is None and (root_dir / "bastion.d").is_dir():  # the conventional directory, without `include`
        patterns = ["bastion.d/*.yaml", "bastion.d/*/*.yaml"]
    if not patterns:
        return data, merged, [path]
    diags: list[Diagnostic] = []
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError([merged.diagnostic(("include",), "include is a list of file names or globs")])
    owners: dict[str, FileOwners] | None = None
    if data.get("owners") is not None:
        owners = {}
        raw = data["owners"] if isinstance(data["owners"], dict) else {}
        for pattern, rule in raw.items():
            try:
                owners[str(pattern)] = FileOwners.model_validate(rule if rule is not None else {})
            except ValidationError as exc:
                diags += pydantic_diagnostics(exc, merged, ("owners", pattern))
    files: list[Path] = []
    for index, pattern in enumerate(patterns):
        found = sorted(Path(p) for p in glob.glob(str(root_dir / pattern), recursive=True))
        if not found and "include" in data:  # bastion.d/ may hold only some of its conventional shapes
            diags.append(merged.diagnostic(("include", index), f"no file matches {pattern!r}"))
        for file in found:
            resolved = file.resolve()
            # includes stay inside the config's directory: a config cannot pull in arbitrary files
            if not resolved.is_relative_to(root_dir) or resolved == path.resolve():
                diags.append(merged.diagnostic(("include", index), f"{file} is outside {root_dir} or the root"))
            elif resolved not in files:
                files.append(resolved)
    if len(files) > MAX_FILES:
        raise ConfigError([merged.diagnostic(("include",), f"more than {MAX_FILES} included files")])
    for file in files:
        diags += _merge(data, merged, file, root_dir, owners)
    if diags:
        raise ConfigError(diags)
    return data, merged, [path, *files]


def _merge(data: dict[str, Any], merged: FilePositions, file: Path, root_dir: Path,
           owners: dict[str, FileOwners] | None) -> list[Diagnostic]:
    part, pos = read_yaml(file)  # raises ConfigError pointing into `file`
    name = str(file)
    here = FilePositions(name, pos.index, {(): name}, root_dir)
    if part is None:
        return []
    if not isinstance(part, dict):
        return [here.diagnostic((), "an included file is a YAML mapping")]
    relative = file.relative_to(root_dir).as_posix()
    rule = _rule(relative, owners)
    diags: list[Diagnostic] = []
    for key in part:
        if key not in SECTIONS:
            diags.append(here.diagnostic((key,), f"an included file holds only {', '.join(SECTIONS)}"))
        elif rule is not None and key not in rule.sections:
            diags.append(here.diagnostic((key,), f"{relative} may not define `{key}` (owners in the root file: "
                                         f"{', '.join(rule.sections) or 'nothing'})"))
        elif owners is not None and rule is None:
            diags.append(here.diagnostic((key,), f"{relative} matches no entry of `owners` in the root file, so "
                                         "it may define nothing"))
    if diags:
        return diags

    def copy(old: Loc, new: Loc) -> None:
        """Index every position under `old` of this file at `new` in the merged document."""
        for loc, at in pos.index.items():
            if loc[:len(old)] == old:
                target = (*new, *loc[len(old):])
                merged.index[target] = at
                merged.files[target] = name

    for key, value in part.items():
        if key in MERGED_MAPS:
            if not isinstance(value, dict):
                diags.append(here.diagnostic((key,), f"`{key}` is a mapping"))
                continue
            section = data.setdefault(key, {}) if isinstance(data.get(key, {}), dict) else {}
            for item, definition in value.items():
                if item in section:
                    diags.append(here.diagnostic((key, item), f"{key[:-2] if key == 'classes' else key} "
                                                 f"{item!r} is defined twice (also at {merged.where((key, item))})"))
                    continue
                section[item] = definition
                copy((key, item), (key, item))
        elif key in MERGED_LISTS:
            diags += _append(data, key, (key,), value, here, copy, rule, relative)
        else:  # providers: a list per kind
            if not isinstance(value, dict):
                diags.append(here.diagnostic((key,), "`providers` is a mapping of kinds"))
                continue
            providers = data.setdefault("providers", {})
            for kind, items in value.items():
                if kind not in PROVIDER_KINDS:
                    diags.append(here.diagnostic((key, kind), f"unknown provider kind {kind!r}"))
                    continue
                diags += _append(providers, kind, (key, kind), items, here, copy, None, relative)
    return diags


def _append(into: dict[str, Any], key: str, loc: Loc, items: Any, here: FilePositions, copy: Any,
            rule: FileOwners | None, relative: str) -> list[Diagnostic]:
    if not isinstance(items, list):
        return [here.diagnostic(loc, f"`{key}` is a list")]
    target = into.setdefault(key, [])
    if not isinstance(target, list):
        return [here.diagnostic(loc, f"`{key}` is a list in the root file too")]
    diags = []
    for index, item in enumerate(items):
        if rule is not None and loc == ("apis",):
            owner = item.get("owner") if isinstance(item, dict) else None
            allowed = rule.apis
            if owner not in allowed:
                diags.append(here.diagnostic((*loc, index, "owner"), f"{relative} may define APIs owned by "
                                             f"{', '.join(allowed) or 'nobody'}, not {owner!r} (owners in the "
                                             "root file)"))
                continue
        copy((*loc, index), (*loc, len(target)))
        target.append(item)
    return diags


def _rule(relative: str, owners: dict[str, FileOwners] | None) -> FileOwners | None:
    """The first `owners` entry whose glob matches the file (as written in the root, e.g. `apis/*.yaml`)."""
    for pattern, rule in (owners or {}).items():
        if fnmatch.fnmatchcase(relative, pattern):
            return rule
    return None


def api_sources(loaded: LoadedConfig) -> dict[str, str]:
    """API name -> `file:line` where it is defined (the "source" of its routes in explain and the report)."""
    positions = loaded.positions
    out: dict[str, str] = {}
    for index, api in enumerate(loaded.model.apis):
        loc = ("apis", index)
        if isinstance(positions, FilePositions):
            out.setdefault(api.name, positions.where(loc))
        else:
            out.setdefault(api.name, f"{Path(positions.file).name}:{positions.of(loc)[0]}")
    return out
