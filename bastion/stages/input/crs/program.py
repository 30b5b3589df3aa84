"""The compiled CRS program as data: rules, their setvar and ctl actions, and the program of one config load.

`compiler` builds it, `engine` runs it; neither has to import the other's code to share these values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.stages.input.crs.operators import Match
from bastion.stages.input.crs.seclang import Marker, VarSpec
from bastion.stages.input.crs.transforms import Transform

SCALARS = frozenset({
    "REQUEST_METHOD", "REQUEST_PROTOCOL", "REQUEST_LINE", "REQUEST_URI", "REQUEST_URI_RAW", "REQUEST_FILENAME",
    "REQUEST_BASENAME", "QUERY_STRING", "REQUEST_BODY", "REMOTE_ADDR", "REQBODY_PROCESSOR", "REQBODY_ERROR",
    "UNIQUE_ID", "DURATION", "ARGS_COMBINED_SIZE", "FILES_COMBINED_SIZE", "MATCHED_VAR", "MATCHED_VAR_NAME",
})
MACRO = re.compile(r"%\{([A-Za-z_]+)(?:[.:]([^}]+))?\}")
Plan = tuple[tuple[tuple[int, tuple[str, ...]], ...], tuple[tuple[Transform | None, Transform], ...]]
"""A Set's text, step by step: the per-request stage cache key after each step (a number shared by the Sets
reading the same variables, and the chain prefix), and each step as (its `transforms.JOINED` form or None,
its per-value form). Sets with the same variables share their values and every common chain prefix."""
MAX_MATCHES = 256
"""Most match records kept per request (the audit needs the first ones; a flood must not grow memory)."""


@dataclass(frozen=True, slots=True)
class Setvar:
    name: str            # lower-case tx key
    op: str              # "=", "+", "-", "!"
    value: str


@dataclass(frozen=True, slots=True)
class Ctl:
    name: str
    value: str


@dataclass(slots=True)
class Rule:
    """One compiled rule (with its chained rules)."""

    id: str
    phase: int
    file: str
    line: int
    targets: tuple[VarSpec, ...]
    excludes: tuple[VarSpec, ...]
    chain_key: tuple[str, ...]
    transforms: tuple[Transform, ...]
    match: Match
    multi_match: bool
    capture: bool
    setvars: tuple[Setvar, ...]
    ctls: tuple[Ctl, ...]
    skip_after: str | None
    deny: bool
    msg: str
    tags: tuple[str, ...]
    severity: int | None
    paranoia: int
    log: bool = True             # False for `nolog` rules: they change TX but are not reported
    chained: tuple[Rule, ...] = ()
    set_index: int = -1          # its pattern's index in its RE2 Set, or -1
    set_key: tuple[tuple[str, ...], str] = ((), "\n")  # which Set: (transformation chain, value separator)
    joinable: bool = False       # its operator can be tried once on all values joined by newlines
    static_targets: bool = False  # reads only request variables, which do not change during a transaction
    static_operator: bool = False  # its operator argument has no macro other than %{tx.*}
    constant_operator: bool = False  # its operator argument has no macro at all
    joinable_stages: bool = False  # multiMatch with an operator that can run on joined values
    separator: str = "\n"        # joins its values for that: NUL unless the pattern has line anchors
    values_key: int = -1         # the same number for rules reading the same targets (their values are shared)
    prefilter: tuple[tuple[tuple[tuple[str, ...], str], int], ...] = ()
    """(Set, index) pairs: when none of them matched this request's values, the rule cannot match (one pair for
    the rule's chain; multiMatch rules have one per transformation stage)."""


@dataclass(slots=True)
class Program:
    """The compiled rules of one phase list, with markers, and the RE2 Sets per transformation chain."""

    phases: dict[int, list[Rule | Marker]]
    sets: dict[tuple[tuple[str, ...], str], Callable[[bytes], list[int]]]
    """Per (transformation chain, separator): the Set's match on UTF-8 text (the indices that match)."""
    rules: dict[str, Rule] = field(default_factory=dict)
    group_targets: dict[tuple[tuple[str, ...], str], tuple[VarSpec, ...]] = field(default_factory=dict)
    """Per Set: every request variable its rules read (the prefilter transforms each value once)."""
    group_plans: dict[tuple[tuple[str, ...], str], Plan] = field(default_factory=dict)
    """Per Set: how its text is built (see `Plan`)."""
    initial_tx: dict[str, str] = field(default_factory=dict)
    """TX after the setup and the folded initialisation rules: every transaction starts from it."""
