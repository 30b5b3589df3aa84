"""What one GraphQL document asks for: depth, cost, aliases, directives, introspection and root fields.

Pure functions over graphql-core's AST; no schema is needed. Every operation in the document is measured (not
only the one `operationName` selects), so a server that picks another operation than the gateway would still
run a checked one.

- Depth counts fields: `{a {b}}` is 2; inline fragments and fragment spreads add none, their fields do.
- Cost: a field costs `m * (1 + cost of its sub-selection)`, `m` being the integer of its first list argument
  (`first`, `last`, `limit`), else 1. `users(first: 100) {name}` costs 200. Fragments are measured once, in
  dependency order, so a document that spreads the same fragment many times costs time linear in its size.
- Aliases and directives are counted where they are written (a syntactic count). Repetition through fragments
  is what the cost budget is for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)

INTROSPECTION = frozenset({"__schema", "__type"})
COST_CAP = 10**15  # a measured cost never exceeds this (2^50 fields is already absurd)


class DocumentError(ValueError):
    """A document the gateway refuses before measuring it; `reason` is the stable code, `why` safe to show."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why


@dataclass(slots=True)
class Operation:
    """One operation of the document."""

    kind: str  # "query", "mutation", "subscription"
    name: str | None
    root_fields: set[str] = field(default_factory=set)
    depth: int = 0
    cost: int = 0


@dataclass(slots=True)
class Analysis:
    """The measures of one document. `depth` and `cost` are those of its deepest and costliest operation."""

    operations: list[Operation]
    aliases: int = 0
    directives: int = 0
    introspection: str | None = None  # the first introspection field found

    @property
    def depth(self) -> int:
        return max((op.depth for op in self.operations), default=0)

    @property
    def cost(self) -> int:
        return max((op.cost for op in self.operations), default=0)

    def selected(self, operation_name: str | None) -> Operation:
        """The operation a server would run (GraphQL spec §6.1 GetOperation)."""
        if operation_name is None:
            if len(self.operations) != 1:
                raise DocumentError("graphql_invalid_query",
                                    "The document has several operations: operationName must name one.")
            return self.operations[0]
        for op in self.operations:
            if op.name == operation_name:
                return op
        raise DocumentError("graphql_invalid_query", "operationName does not name an operation of the document.")


@dataclass(frozen=True, slots=True)
class Measure:
    """How to count: the list arguments, the fallback list size, and the limits that end the walk early."""

    list_arguments: frozenset[str]
    default_list_size: int
    max_depth: int
    max_cost: int


def analyse(doc: DocumentNode, variables: dict[str, Any] | None, measure: Measure) -> Analysis:
    """Measure every operation of `doc`. Raises DocumentError for documents no server may execute (cycles,
    unknown or duplicate fragments, type definitions) and, with reason `graphql_depth_exceeded`, as soon as a
    field lies deeper than `measure.max_depth` (the walk never goes further than the limit)."""
    operations: list[OperationDefinitionNode] = []
    fragments: dict[str, FragmentDefinitionNode] = {}
    for definition in doc.definitions:
        if isinstance(definition, OperationDefinitionNode):
            operations.append(definition)
        elif isinstance(definition, FragmentDefinitionNode):
            if definition.name.value in fragments:  # spec §5.5.1.1 Fragment Name Uniqueness
                raise DocumentError("graphql_invalid_query", "The document defines a fragment twice.")
            fragments[definition.name.value] = definition
        else:  # spec §5.1.1 Executable Definitions
            raise DocumentError("graphql_invalid_query", "The document contains a type system definition.")
    if not operations:
        raise DocumentError("graphql_invalid_query", "The document has no operation.")
    names = [op.name.value if op.name else None for op in operations]
    if None in names and len(names) > 1:  # spec §5.2.2.1 Lone Anonymous Operation
        raise DocumentError("graphql_invalid_query", "An anonymous operation must be the only one.")
    if len(set(names)) != len(names):  # spec §5.2.1.1 Operation Name Uniqueness
        raise DocumentError("graphql_invalid_query", "The document defines an operation name twice.")

    out = Analysis([])
    spreads = {name: _scan(frag.selection_set, out, frag.directives) for name, frag in fragments.items()}
    order = _dependency_order(spreads)
    walker = _Walker(measure, _variable_values(operations, variables))
    for name in order:  # a fragment after every fragment it spreads
        walker.fragments[name] = walker.selection_set(fragments[name].selection_set, 0)
    for definition in operations:
        used = _scan(definition.selection_set, out, definition.directives)
        for var in definition.variable_definitions or ():
            out.directives += len(var.directives or ())
        missing = used - fragments.keys()
        if missing:
            raise DocumentError("graphql_invalid_query", "The document spreads a fragment it does not define.")
        depth, cost = walker.selection_set(definition.selection_set, 0)
        op = Operation(definition.operation.value, definition.name.value if definition.name else None,
                       _root_fields(definition.selection_set, fragments), depth, cost)
        out.operations.append(op)
    return out


def _scan(selection_set: SelectionSetNode, out: Analysis, directives: Any) -> set[str]:
    """Count aliases, directives and introspection fields of one definition; return the fragments it spreads."""
    out.directives += len(directives or ())
    spread: set[str] = set()
    stack = [selection_set]
    while stack:
        for sel in stack.pop().selections:
            out.directives += len(sel.directives or ())
            if isinstance(sel, FieldNode):
                if sel.alias is not None:
                    out.aliases += 1
                if out.introspection is None and sel.name.value in INTROSPECTION:
                    out.introspection = sel.name.value
                if sel.selection_set is not None:
                    stack.append(sel.selection_set)
            elif isinstance(sel, InlineFragmentNode):
                stack.append(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):
                spread.add(sel.name.value)
    return spread


def _dependency_order(spreads: dict[str, set[str]]) -> list[str]:
    """Fragments ordered so that each comes after those it spreads (Kahn). A cycle is refused (spec §5.5.2.2
    Fragment spreads must not form cycles): a server without that check would loop or blow its stack."""
    for name, used in spreads.items():
        if used - spreads.keys():
            raise DocumentError("graphql_invalid_query", f"Fragment {name} spreads a fragment that is not defined.")
    waiting = {name: len(used) for name, used in spreads.items()}
    users: dict[str, list[str]] = {name: [] for name in spreads}
    for name, used in spreads.items():
        for dep in used:
            users[dep].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    order: list[str] = []
    while ready:
        name = ready.pop()
        order.append(name)
        for user in users[name]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if len(order) != len(spreads):
        cyclic = sorted(set(spreads) - set(order))
        raise DocumentError("graphql_fragment_cycle", f"Fragment {cyclic[0]} spreads itself, directly or not.")
    return order


def _variable_values(operations: list[OperationDefinitionNode], variables: dict[str, Any] | None) -> dict[str, int]:
    """Integer values of variables: the request's, else the largest default an operation declares."""
    values: dict[str, int] = {}
    for op in operations:
        for var in op.variable_definitions or ():
            default = var.default_value
            if isinstance(default, IntValueNode):
                name = var.variable.name.value
                values[name] = max(values.get(name, 0), int(default.value))
    for name, value in (variables or {}).items():
        if isinstance(value, int) and not isinstance(value, bool):
            values[name] = value
    return values


class _Walker:
    """Depth and cost of selection sets; fragments' measures are filled in before anything spreads them."""

    __slots__ = ("cap", "default", "fragments", "list_args", "max_depth", "variables")

    def __init__(self, measure: Measure, variables: dict[str, int]) -> None:
        self.list_args = measure.list_arguments
        self.default = measure.default_list_size
        self.max_depth = measure.max_depth
        self.cap = COST_CAP  # costs saturate here: exact for anything real, bounded for fragment bombs
        self.variables = variables
        self.fragments: dict[str, tuple[int, int]] = {}

    def selection_set(self, selection_set: SelectionSetNode, depth: int) -> tuple[int, int]:
        """(depth below `depth`, cost) of a selection set whose parent field is at `depth`."""
        deepest, cost = 0, 0
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                if depth >= self.max_depth:  # this field would be one level past the limit: stop here
                    raise DocumentError("graphql_depth_exceeded", "The query is nested too deeply.")
                sub_depth, sub_cost = 0, 0
                if sel.selection_set is not None:
                    sub_depth, sub_cost = self.selection_set(sel.selection_set, depth + 1)
                d, c = 1 + sub_depth, self.multiplier(sel) * (1 + sub_cost)
            elif isinstance(sel, InlineFragmentNode):
                d, c = self.selection_set(sel.selection_set, depth)
            else:
                d, c = self.fragments[cast(FragmentSpreadNode, sel).name.value]  # the third kind of selection
                if depth + d > self.max_depth:
                    raise DocumentError("graphql_depth_exceeded", "The query is nested too deeply.")
            deepest = max(deepest, d)
            cost = min(cost + c, self.cap)
        return deepest, cost

    def multiplier(self, sel: FieldNode) -> int:
        for arg in sel.arguments or ():
            if arg.name.value not in self.list_args:
                continue
            value = arg.value
            if isinstance(value, IntValueNode):
                return max(1, min(int(value.value), self.cap))
            if isinstance(value, VariableNode):
                return max(1, min(self.variables.get(value.name.value, self.default), self.cap))
            return self.default
        return 1


def _root_fields(selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]) -> set[str]:
    """Names of the fields the operation asks of its root type, through fragments (aliases do not hide them)."""
    names: set[str] = set()
    seen: set[str] = set()
    stack = [selection_set]
    while stack:
        for sel in stack.pop().selections:
            if isinstance(sel, FieldNode):
                names.add(sel.name.value)
            elif isinstance(sel, InlineFragmentNode):
                stack.append(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode) and sel.name.value not in seen:
                seen.add(sel.name.value)
                stack.append(fragments[sel.name.value].selection_set)
    return names


__all__ = ["COST_CAP", "INTROSPECTION", "Analysis", "DocumentError", "Measure", "Operation", "analyse"]
