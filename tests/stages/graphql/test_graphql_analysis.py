"""Measures of a GraphQL document (bastion/stages/graphql/analysis.py)."""

from __future__ import annotations

import pytest
from graphql import parse

from bastion.stages.graphql.analysis import DocumentError, Measure, analyse

MEASURE = Measure(frozenset({"first", "last", "limit"}), default_list_size=100, max_depth=50, max_cost=10_000)

MEASURES = [
    # (query, variables, depth, cost, aliases, directives)
    ("{ a }", None, 1, 1, 0, 0),
    ("{ a b c }", None, 1, 3, 0, 0),
    ("{ a { b { c } } }", None, 3, 3, 0, 0),
    ("{ users(first: 100) { name } }", None, 2, 200, 0, 0),
    ("{ users(first: 10) { name friends(first: 5) { name } } }", None, 3, 10 * (1 + 1 + 5 * 2), 0, 0),
    ("{ users(first: 0) { name } }", None, 2, 2, 0, 0),  # at least the field itself
    ("{ users(first: -5) { name } }", None, 2, 2, 0, 0),
    ('{ users(first: "x") { name } }', None, 2, 200, 0, 0),  # not an integer: the default size
    ("query ($n: Int) { users(first: $n) { name } }", {"n": 7}, 2, 14, 0, 0),
    ("query ($n: Int) { users(first: $n) { name } }", {"n": True}, 2, 200, 0, 0),
    ("query ($n: Int = 3) { users(first: $n) { name } }", None, 2, 6, 0, 0),
    ("query ($n: Int = 3) { users(first: $n) { name } }", {"n": 9}, 2, 18, 0, 0),
    ("{ x: a y: a @include(if: true) }", None, 1, 2, 2, 1),
    ("query Q($v: Int @deprecated) @live { a }", None, 1, 1, 0, 2),
    ("{ a { ...F ...F } } fragment F on T { b c }", None, 2, 1 + 4, 0, 0),
    ("{ a { ... on T { b { c } } } }", None, 3, 3, 0, 0),
    ("query A { a } query B { a { b { c } } }", None, 3, 3, 0, 0),  # the deepest and costliest operation
]


@pytest.mark.parametrize(("query", "variables", "depth", "cost", "aliases", "directives"), MEASURES)
def test_measures(query, variables, depth, cost, aliases, directives) -> None:
    found = analyse(parse(query), variables, MEASURE)
    assert (found.depth, found.cost, found.aliases, found.directives) == (depth, cost, aliases, directives)


def test_operations_and_root_fields() -> None:
    doc = parse("query Q { orders { id } ...R } mutation M { x: createOrder { id } ... on Mutation { cancel } }"
                " fragment R on Query { me { id } }")
    found = analyse(doc, None, MEASURE)
    assert [(op.kind, op.name, sorted(op.root_fields)) for op in found.operations] == [
        ("query", "Q", ["me", "orders"]), ("mutation", "M", ["cancel", "createOrder"])]
    assert found.selected("M").kind == "mutation"
    with pytest.raises(DocumentError):
        found.selected(None)
    with pytest.raises(DocumentError):
        found.selected("Nope")


def test_depth_walk_stops_at_the_limit() -> None:
    shallow = Measure(MEASURE.list_arguments, 100, max_depth=2, max_cost=10)
    with pytest.raises(DocumentError) as caught:
        analyse(parse("{ a { b { c } } }"), None, shallow)
    assert caught.value.reason == "graphql_depth_exceeded"
    assert analyse(parse("{ a { b } }"), None, shallow).depth == 2


def test_cost_saturates_instead_of_growing_without_bound() -> None:
    fragments = " ".join(f"fragment F{i} on T {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 200))
    found = analyse(parse("{ a { ...F199 } } fragment F0 on T { a } " + fragments), None, MEASURE)
    assert found.cost == 10**15
