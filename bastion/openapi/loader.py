"""Load an OpenAPI 3.0/3.1 document, resolve its `$ref`s and list its operations.

Pure: the only IO is reading the document and the local files it references. Every error is a
`ConfigError` whose diagnostics point at `file:line:col` of the offending node, like the config loader.

`$ref` handling:
- `#/json/pointer` inside the same file, `other.yaml` and `other.yaml#/pointer` relative to the referring file.
  Remote (`http:`/`https:`) references are refused: the gateway never fetches its contract from the network.
- Every reference is inlined, so an operation dict is self-contained. A reference that points back into
  itself (a recursive schema such as a tree node) cannot be inlined; it stays `{"$ref": "<key>"}` and the
  referenced schema is attached to the operation under `x-bastion-refs` (`<key>` -> resolved schema), which
  `bastion.stages.input.schema` turns into `$defs` when it compiles a validator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bastion.config.source import MAX_YAML_BYTES, ConfigError, Diagnostic, Positions, read_yaml
from bastion.openapi.keys import REFS_KEY, VERSION_KEY

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# values that are data, not OpenAPI/Schema objects: a "$ref" key inside them is just a key
_DATA_KEYS = frozenset({"example", "default", "const", "enum", "value"})
# maps of user-chosen names, where a key called `default` or `example` is a name, not data
_NAMED_MAPS = frozenset({
    "properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "schemas", "responses",
    "parameters", "headers", "content", "examples", "links", "callbacks", "securitySchemes", "requestBodies",
    "paths", "encoding", "pathItems", "webhooks",
})


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path template, with everything a route needs."""

    method: str  # upper case
    path: str  # the template, e.g. /orders/{id}
    operation_id: str | None
    operation: dict[str, Any]  # resolved; `parameters` merged from the path item, `security` effective

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(p["name"] for p in self.operation.get("parameters", ()) if p.get("in") == "path")


@dataclass(frozen=True, slots=True)
class OpenApiDocument:
    """A loaded document: its version, the resolved tree and its operations in document order."""

    path: Path
    version: str  # "3.0" or "3.1"
    document: dict[str, Any]
    operations: tuple[Operation, ...]
    files: tuple[Path, ...] = field(default=())  # every file read, for the config hash and reload

    def operation(self, operation_id: str) -> Operation | None:
        for op in self.operations:
            if op.operation_id == operation_id:
                return op
        return None


class _Resolver:
    def __init__(self, root: Path, max_bytes: int = MAX_YAML_BYTES) -> None:
        self.max_bytes = max_bytes
        self.files: dict[Path, tuple[Any, Positions]] = {}
        self.root = root.resolve()
        self.cache: dict[str, Any] = {}
        self.recursive: dict[str, Any] = {}

    def load(self, path: Path) -> tuple[Any, Positions]:
        path = path.resolve()
        if path not in self.files:
            self.files[path] = read_yaml(path, self.max_bytes)
        return self.files[path]

    def error(self, file: Path, loc: tuple[str | int, ...], message: str) -> ConfigError:
        _, positions = self.load(file)
        return ConfigError([positions.diagnostic(loc, message)])

    def target(self, ref: str, file: Path, loc: tuple[str | int, ...]) -> tuple[Path, str]:
        if ref.startswith(("http://", "https://", "//")):
            raise self.error(file, loc, f"remote $ref {ref!r} is not supported: reference a local file")
        where, _, pointer = ref.partition("#")
        target = (file.parent / unquote(where)).resolve() if where else file.resolve()
        if where and not target.is_file():
            raise self.error(file, loc, f"$ref {ref!r}: no file {target}")
        return target, unquote(pointer)

    def lookup(self, file: Path, pointer: str, ref: str, src: Path,
               loc: tuple[str | int, ...]) -> tuple[Any, tuple[str | int, ...]]:
        node, _ = self.load(file)
        path: tuple[str | int, ...] = ()
        if pointer in ("", "/"):
            return node, path
        if not pointer.startswith("/"):
            raise self.error(src, loc, f"$ref {ref!r}: a fragment must be a JSON pointer starting with '/'")
        for raw in pointer[1:].split("/"):
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node, path = node[token], (*path, token)
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node, path = node[int(token)], (*path, int(token))
            else:
                raise self.error(src, loc, f"$ref {ref!r} points at nothing")
        return node, path

    def resolve(self, node: Any, file: Path, loc: tuple[str | int, ...], stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [self.resolve(item, file, (*loc, i), stack) for i, item in enumerate(node)]
        if not isinstance(node, dict):
            return _scalar(node)
        ref = node.get("$ref")
        if isinstance(ref, str):
            target_file, pointer = self.target(ref, file, (*loc, "$ref"))
            key = self.key(target_file, pointer)
            if key in stack:  # a recursive schema: keep the reference, attach the definition once
                self.recursive.setdefault(key, None)
                return {"$ref": key}
            if key not in self.cache:
                target, target_loc = self.lookup(target_file, pointer, ref, file, (*loc, "$ref"))
                self.cache[key] = self.resolve(target, target_file, target_loc, (*stack, key))
                if key in self.recursive:
                    self.recursive[key] = self.cache[key]
            resolved = self.cache[key]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if siblings and isinstance(resolved, dict):  # OAS 3.1: summary/description beside $ref
                return {**resolved, **{k: self.resolve(v, file, (*loc, k), stack) for k, v in siblings.items()}}
            return resolved
        named = bool(loc) and loc[-1] in _NAMED_MAPS
        return {k: (_data(v) if k in _DATA_KEYS and not named else self.resolve(v, file, (*loc, k), stack))
                for k, v in node.items()}

    def key(self, file: Path, pointer: str) -> str:
        if file == self.root:
            return "#" + pointer
        try:
            name = file.relative_to(self.root.parent).as_posix()
        except ValueError:
            name = file.as_posix()
        return f"{name}#{pointer}"


def _scalar(value: Any) -> Any:
    """ruamel's scalar subclasses (ScalarInt, ScalarFloat, ...) -> the plain Python types validators expect."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def _data(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_data(v) for v in value]
    return _scalar(value)


def load_openapi(path: Path | str, max_bytes: int = MAX_YAML_BYTES) -> OpenApiDocument:
    """Read, check and resolve an OpenAPI 3.0/3.1 document, no file of it over `max_bytes`
    (`apis[].openapi_max_bytes`); raise ConfigError with file:line diagnostics."""
    path = Path(path)
    resolver = _Resolver(path, max_bytes)
    raw, positions = resolver.load(path)
    if not isinstance(raw, dict):
        raise ConfigError([positions.diagnostic((), "an OpenAPI document must be a mapping")])
    version = str(raw.get("openapi", ""))
    if not version.startswith(("3.0", "3.1")):
        raise ConfigError([positions.diagnostic(("openapi",), f"OpenAPI 3.0 or 3.1 expected, got {version!r}")])
    if not isinstance(raw.get("paths", {}), dict):
        raise ConfigError([positions.diagnostic(("paths",), "`paths` must be a mapping")])
    doc = resolver.resolve(raw, path.resolve(), (), ())
    major = version[:3]
    global_security = doc.get("security")
    operations: list[Operation] = []
    diags: list[Diagnostic] = []
    for template, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            diags.append(positions.diagnostic(("paths", template), "a path item must be a mapping"))
            continue
        common = item.get("parameters") or []
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            if not isinstance(op, dict):
                diags.append(positions.diagnostic(("paths", template, method), "an operation must be a mapping"))
                continue
            merged = _merge_parameters(common, op.get("parameters") or [])
            operation = {**op, "parameters": merged, VERSION_KEY: major}
            if "security" not in op and global_security is not None:
                operation["security"] = global_security
            used = _used_refs(operation, resolver.recursive)
            if used:
                operation[REFS_KEY] = used
            diags.extend(_check_path_params(template, merged, positions, ("paths", template, method)))
            operations.append(Operation(method.upper(), template, op.get("operationId"), operation))
    if diags:
        raise ConfigError(diags)
    return OpenApiDocument(path, major, doc, tuple(operations), tuple(resolver.files))


def _merge_parameters(common: list[Any], own: list[Any]) -> list[dict[str, Any]]:
    """OAS: operation-level parameters override path-item ones with the same name and location."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for param in [*common, *own]:
        if isinstance(param, dict):
            out[(str(param.get("name")), str(param.get("in")))] = param
    return list(out.values())


def _check_path_params(template: str, params: list[dict[str, Any]], positions: Positions,
                       loc: tuple[str | int, ...]) -> list[Diagnostic]:
    names = _template_names(template)
    declared = {p.get("name") for p in params if p.get("in") == "path"}
    return [positions.diagnostic(loc, f"path parameter {{{name}}} of {template} is not declared in `parameters`")
            for name in names if name not in declared]


def _template_names(template: str) -> list[str]:
    names, rest = [], template
    while "{" in rest:
        _, _, rest = rest.partition("{")
        name, _, rest = rest.partition("}")
        names.append(name)
    return names


def _used_refs(node: Any, recursive: dict[str, Any]) -> dict[str, Any]:
    """The recursive definitions an operation refers to (transitively), or {}."""
    if not recursive:
        return {}
    found: dict[str, Any] = {}
    todo = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref in recursive and ref not in found:
                found[ref] = recursive[ref]
                todo.append(recursive[ref])
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return found
