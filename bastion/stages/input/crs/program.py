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
SetMatch = Callable[[bytes], list[int]]
"""An RE2 Set's match on UTF-8 text: the indices of the patterns that match."""
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
    joined_transforms: tuple[Transform | None, ...] = ()
    """Per transformation, its `transforms.JOINED` form (one call on values joined by SEPARATOR) or None."""
    separator: str = "\n"        # joins its values for that: NUL unless the pattern has line anchors
    values_key: int = -1         # the same number for rules reading the same targets (their values are shared)
    injection_hits: Callable[[list[str]], list[int] | None] | None = None
    """@detectSQLi/@detectXSS (not negated) with the C helper built: libinjection over a list of texts in one
    call (`injection.hits_sqli`): the indices of the texts that are injection, None when one has no UTF-8 form."""
    prefilter: tuple[tuple[tuple[tuple[str, ...], str], int], ...] = ()
    """(Set, index) pairs: when none of them matched this request's values, the rule cannot match (one pair for
    the rule's chain; multiMatch rules have one per transformation stage)."""


@dataclass(slots=True)
class Program:
    """The compiled rules of one phase list, with markers, and the RE2 Sets per transformation chain."""

    phases: dict[int, list[Rule | Marker]]
    sets: dict[tuple[tuple[str, ...], str], SetMatch]
    """Per (transformation chain, separator): the Set's match on UTF-8 text (the indices that match)."""
    rules: dict[str, Rule] = field(default_factory=dict)
    group_targets: dict[tuple[tuple[str, ...], str], tuple[VarSpec, ...]] = field(default_factory=dict)
    """Per Set: every request variable its rules read (the prefilter transforms each value once)."""
    initial_tx: dict[str, str] = field(default_factory=dict)
    """TX after the setup and the folded initialisation rules: every transaction starts from it."""
    prefilter: Prefilter | None = None
    """The Set prefilter flattened into one straight run per request (see `Prefilter`); None: no Sets."""


@dataclass(frozen=True, slots=True)
class Prefilter:
    """Every Set of a program as one straight run of steps, computed once per request before the first rule.

    Slots hold a variable group's values: the first `len(bases)` slots are the values of each distinct
    variable list, each step then builds one more slot from an earlier one with one transformation (a chain
    prefix shared by several Sets is built once). Each Set then matches its slot's values joined by its
    separator, and each index it reports names the rule positions it makes candidates. A rule with a
    prefilter runs only when one of its Sets reported its index; `always` lists the positions (rules without
    a prefilter, and markers) every request walks, so a clean request visits only those."""

    bases: tuple[tuple[VarSpec, ...], ...]
    steps: tuple[tuple[int, Transform | None, Transform], ...]
    """(parent slot, `transforms.JOINED` form or None, per-value form): slot `len(bases) + i`."""
    matchers: tuple[tuple[int, str, SetMatch, dict[int, tuple[tuple[int, int], ...]]], ...]
    """(slot, separator, Set match, {Set index: ((phase, position), ...)})."""
    always: dict[int, tuple[int, ...]]
    """Per phase: the positions of markers and of rules without a prefilter, in order."""
