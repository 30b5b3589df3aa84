"""CRS rules compiled into Bastion's matcher, and the per-request evaluation (a ModSecurity transaction).

Compilation (once per config load): each SecRule becomes a `Rule` with its targets, its transformation chain
as functions, its operator as a function and its actions as data. Every `@rx` rule without macros joins the
RE2 Set of its transformation chain: at run time a value is transformed once per distinct chain and matched
once against the whole set; a rule then only looks its index up (and runs its own regex only to capture).

Evaluation follows ModSecurity v3: phase 1 then phase 2, rules in file order, `skipAfter` to a `SecMarker`,
chains, `setvar` per matched value (so two bad arguments score twice, as in ModSecurity), `ctl:ruleRemove*`
for the rest of the transaction, and a `deny` (949110 in anomaly mode) ending it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import re2

from bastion.stages.input.crs.operators import FALLBACKS, RE2_OPTIONS, Match, Operators, possessive_to_greedy
from bastion.stages.input.crs.request import CrsRequest
from bastion.stages.input.crs.seclang import Action, Marker, RuleSpec, SecLangError, VarSpec, parse_variables
from bastion.stages.input.crs.transforms import TRANSFORMS, Transform

# Variables the engine can present (collections first); anything else in a rule is an error.
COLLECTIONS = frozenset({
    "ARGS", "ARGS_GET", "ARGS_POST", "ARGS_NAMES", "ARGS_GET_NAMES", "ARGS_POST_NAMES", "REQUEST_HEADERS",
    "REQUEST_HEADERS_NAMES", "REQUEST_COOKIES", "REQUEST_COOKIES_NAMES", "FILES", "FILES_NAMES",
    "MULTIPART_PART_HEADERS", "TX", "XML", "IP", "GEO", "MATCHED_VARS", "MATCHED_VARS_NAMES",
})
SCALARS = frozenset({
    "REQUEST_METHOD", "REQUEST_PROTOCOL", "REQUEST_LINE", "REQUEST_URI", "REQUEST_URI_RAW", "REQUEST_FILENAME",
    "REQUEST_BASENAME", "QUERY_STRING", "REQUEST_BODY", "REMOTE_ADDR", "REQBODY_PROCESSOR", "REQBODY_ERROR",
    "UNIQUE_ID", "DURATION", "ARGS_COMBINED_SIZE", "FILES_COMBINED_SIZE", "MATCHED_VAR", "MATCHED_VAR_NAME",
})
# Actions with no effect on detection here (logging, metadata, persistent collections: see docs/input.md).
_INERT_ACTIONS = frozenset({
    "msg", "logdata", "tag", "severity", "ver", "rev", "maturity", "accuracy", "log", "nolog", "auditlog",
    "noauditlog", "status", "initcol", "expirevar", "pass", "block", "t", "chain", "id", "phase", "capture",
    "multiMatch", "skipAfter", "setvar", "ctl", "deny", "drop",
})
_INERT_CTL = frozenset({"auditEngine", "auditLogParts", "requestBodyAccess", "requestBodyLimit",
                        "requestBodyProcessor", "ruleEngine"})
_SEVERITIES = {"EMERGENCY": 0, "ALERT": 1, "CRITICAL": 2, "ERROR": 3, "WARNING": 4, "NOTICE": 5, "INFO": 6,
               "DEBUG": 7}
# Variables that change during a transaction: rules reading them are never prefiltered.
_STATEFUL = frozenset({"TX", "MATCHED_VAR", "MATCHED_VARS", "MATCHED_VAR_NAME", "MATCHED_VARS_NAMES",
                       "REQUEST_BODY"})
_MACRO = re.compile(r"%\{([A-Za-z_]+)(?:[.:]([^}]+))?\}")
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
    joinable_stages: bool = False  # multiMatch with an operator that can run on joined values


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule that matched: its id, where (e.g. `ARGS:json.user.name`), the matched text and metadata."""

    rule_id: str
    variable: str
    value: str
    tags: tuple[str, ...]
    severity: int | None
    paranoia: int


@dataclass(slots=True)
class Outcome:
    """The transaction's result: the deny rule (or None), every hit, and the final TX collection."""

    denied_by: str | None
    hits: list[Hit]
    tx: dict[str, str]

    def score(self, name: str) -> int:
        try:
            return int(self.tx.get(name, "0"))
        except ValueError:
            return 0


def compile_rule(spec: RuleSpec, operators: Operators, parent: Rule | None = None) -> Rule:
    """A RuleSpec as a Rule; unknown variables, transformations, actions or operators are SecLangErrors."""
    file, line = spec.file, spec.line
    rule_id = spec.action("id") or (parent.id if parent else "")
    if not rule_id and parent is None:
        raise SecLangError(file, line, "rule without id")
    phase_text = spec.action("phase") or (str(parent.phase) if parent else "2")
    phase = {"request": 2, "response": 4, "logging": 5}.get(phase_text) or _int(phase_text, file, line)
    names: list[str] = []
    for action in spec.actions:
        if action.name not in _INERT_ACTIONS:
            raise SecLangError(file, line, f"unsupported action {action.name}")
        if action.name == "t":
            value = action.value or ""
            if value == "none":
                names = []
            elif value in TRANSFORMS:
                names.append(value)
            else:
                raise SecLangError(file, line, f"unsupported transformation t:{value}")
    for var in spec.variables:
        if var.collection not in COLLECTIONS and var.collection not in SCALARS:
            raise SecLangError(file, line, f"unsupported variable {var.collection}")
    setvars = tuple(_setvar(a, file, line) for a in spec.actions if a.name == "setvar")
    ctls = tuple(_ctl(a, file, line) for a in spec.actions if a.name == "ctl")
    tags = tuple(spec.all("tag"))
    paranoia = next((int(t.rsplit("/", 1)[1]) for t in tags if t.startswith("paranoia-level/")), 0)
    severity_text = (spec.action("severity") or "").upper()
    severity = _SEVERITIES.get(severity_text, int(severity_text) if severity_text.isdigit() else None)
    rule = Rule(
        id=rule_id, phase=phase, file=file, line=line,
        targets=tuple(v for v in spec.variables if not v.exclude),
        excludes=tuple(v for v in spec.variables if v.exclude),
        chain_key=tuple(names), transforms=tuple(TRANSFORMS[n] for n in names),
        match=operators.build(spec.operator, rule_id, file, line),
        multi_match=any(a.name == "multiMatch" for a in spec.actions),
        capture=any(a.name == "capture" for a in spec.actions),
        setvars=setvars, ctls=ctls, skip_after=spec.action("skipAfter"),
        deny=any(a.name in ("deny", "drop") for a in spec.actions),
        msg=spec.action("msg") or "", tags=tags, severity=severity, paranoia=paranoia,
        log=not any(a.name == "nolog" for a in spec.actions),
    )
    edge_free = not _TEXT_EDGES.search(spec.operator.argument)
    if spec.operator.name == "rx" and not spec.operator.negated and "%{" not in spec.operator.argument \
            and rule_id not in FALLBACKS and not rule.multi_match and parent is None and edge_free:
        rule.set_index = -2  # a Set candidate; the compiler assigns the index
    rule.static_operator = not _TX_MACRO.search(spec.operator.argument)
    rule.static_targets = all(v.collection not in _STATEFUL and v.collection not in ("MATCHED_VAR_NAME",)
                              for v in rule.targets)
    joins = spec.operator.name in ("rx", "pm", "pmFromFile", "pmf") and not spec.operator.negated and edge_free \
        and "%{" not in spec.operator.argument
    rule.joinable = joins and not rule.multi_match
    rule.joinable_stages = joins and rule.multi_match
    rule.chained = tuple(compile_rule(c, operators, rule) for c in spec.chained)
    return rule


def _int(text: str, file: str, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise SecLangError(file, line, f"not a number: {text!r}") from None


def _setvar(action: Action, file: str, line: int) -> Setvar:
    text = action.value or ""
    if text.startswith("!"):
        name, op, value = text[1:], "!", ""
    else:
        name, eq, value = text.partition("=")
        op = "="
        if eq and value[:1] in "+-" and value[:1]:
            op, value = value[0], value[1:]
        if not eq:
            value = "1"
    collection, _, key = name.partition(".")
    if collection.lower() not in ("tx", "ip", "global", "session", "user", "resource"):
        raise SecLangError(file, line, f"setvar on unsupported collection {collection}")
    # persistent collections (ip., global. ...) are not kept between requests: the gateway has its own
    # rate limits and blocklists (docs/input.md lists the CRS 910/912 rules this affects)
    return Setvar(key.lower() if collection.lower() == "tx" else "", op, value)


def _ctl(action: Action, file: str, line: int) -> Ctl:
    name, _, value = (action.value or "").partition("=")
    if name not in _INERT_CTL and name not in ("ruleRemoveById", "ruleRemoveByTag", "ruleRemoveTargetById",
                                               "ruleRemoveTargetByTag", "forceRequestBodyVariable"):
        raise SecLangError(file, line, f"unsupported ctl:{name}")
    return Ctl(name, value)


@dataclass(slots=True)
class Program:
    """The compiled rules of one phase list, with markers, and the RE2 Sets per transformation chain."""

    phases: dict[int, list[Rule | Marker]]
    sets: dict[tuple[tuple[str, ...], str], Callable[[str], list[int]]]
    rules: dict[str, Rule] = field(default_factory=dict)
    group_targets: dict[tuple[tuple[str, ...], str], frozenset[str]] = field(default_factory=dict)
    group_transforms: dict[tuple[tuple[str, ...], str], tuple[Transform, ...]] = field(default_factory=dict)
    """Per chain: every request variable its Set rules read (the prefilter transforms each value once)."""
    initial_tx: dict[str, str] = field(default_factory=dict)
    """TX after the setup and the folded initialisation rules: every transaction starts from it."""


def build_program(items: list[RuleSpec | Marker], operators: Operators, active_paranoia: int = 4,
                  setup: dict[str, str] | None = None) -> Program:
    """Rules per phase in file order (markers in every phase), and one RE2 Set per transformation chain
    holding the static `@rx` patterns of rules up to `active_paranoia` (others run their own regex).
    `setup` is the TX the transaction starts with (crs-setup.conf's role): gates reading only it are folded."""
    if setup is None:
        setup = {"executing_paranoia_level": str(active_paranoia), "paranoia_level": str(active_paranoia)}
    phases: dict[int, list[Rule | Marker]] = {1: [], 2: []}
    rules: dict[str, Rule] = {}
    patterns: dict[tuple[tuple[str, ...], str], list[str]] = {}
    targets: dict[tuple[tuple[str, ...], str], set[str]] = {}
    for item in items:
        if isinstance(item, Marker):
            for lst in phases.values():
                lst.append(item)
            continue
        rule = compile_rule(item, operators)
        if rule.phase not in phases:
            continue  # response phases: out of scope for request inspection
        phases[rule.phase].append(rule)
        rules[rule.id] = rule
        if rule.set_index == -2:
            if rule.paranoia <= active_paranoia and all(v.collection not in _STATEFUL for v in rule.targets):
                # values are joined with a newline where the pattern has line anchors (they then hold at each
                # value's edges), else with NUL, which far fewer patterns can match (fewer false candidates)
                anchored = "^" in item.operator.argument or "$" in item.operator.argument
                rule.set_key = (rule.chain_key, "\n" if anchored else "\x00")
                group = patterns.setdefault(rule.set_key, [])
                rule.set_index = len(group)
                group.append(_set_source(item.operator.argument))
                targets.setdefault(rule.set_key, set()).update(v.collection for v in rule.targets)
            else:
                rule.set_index = -1
    sets = {key: _compile_set(srcs) for key, srcs in patterns.items()}
    for number, lst in phases.items():
        phases[number] = _fold_gates(lst, setup)
    phases[1], initial = _fold_initialisation(phases[1], setup)
    transforms = {k: tuple(TRANSFORMS[n] for n in k[0]) for k in patterns}
    return Program(phases, sets, rules, {k: frozenset(v) for k, v in targets.items()}, transforms, initial)


def _fold_initialisation(items: list[Rule | Marker], setup: dict[str, str]) -> tuple[list[Rule | Marker],
                                                                                      dict[str, str]]:
    """Run the leading rules that read and write only TX (CRS 901's defaults: `SecRule &TX:x "@eq 0"
    "setvar:tx.x=..."`) once at compile time; every transaction then starts from the resulting TX."""
    probe = Transaction(Program({1: [], 2: []}, {}), CrsRequest(), setup)
    for index, item in enumerate(items):
        if isinstance(item, Marker):
            continue
        if not _tx_only(item):
            return items[index:], probe.tx
        before = dict(probe.tx)
        if probe._evaluate(item) and (item.deny or item.log):  # e.g. 901001: CRS deployed without setup
            probe.tx = before
            return items[index:], probe.tx
    return [], probe.tx


def _tx_only(rule: Rule) -> bool:
    for member in (rule, *rule.chained):
        if member.skip_after or member.ctls or member.excludes:
            return False
        if any(v.collection != "TX" for v in member.targets):
            return False
        if any(_TX_MACRO.search(sv.name + sv.value) for sv in member.setvars):
            return False
        if member.set_index >= 0:
            return False
    return rule.static_operator





_TX_MACRO = re.compile(r"%\{(?!tx[.:])", re.IGNORECASE)  # a macro reading anything but TX
_TEXT_EDGES = re.compile(r"\\[AzZ]")  # whole-text anchors: such patterns cannot run on joined values
def _fold_gates(items: list[Rule | Marker], setup: dict[str, str]) -> list[Rule | Marker]:
    """Constant-fold the gates CRS puts in front of rule groups, e.g. `SecRule TX:EXECUTING_PARANOIA_LEVEL
    "@lt 2" "skipAfter:..."` or `SecRule &TX:crs_exclusions_drupal "@eq 0" "skipAfter:..."`: a gate that only
    reads TX variables no rule can change (set by the config, or never set) either always skips (its rules
    are dropped) or never does (the gate is dropped)."""
    written = _written(items, setup)
    probe = Transaction(Program({1: [], 2: []}, {}), CrsRequest(), setup)
    out: list[Rule | Marker] = []
    skip_to: str | None = None
    for item in items:
        if isinstance(item, Marker):
            if skip_to == item.name:
                skip_to = None
            out.append(item)
            continue
        if skip_to is not None:
            continue
        if not _is_static_gate(item, written):
            out.append(item)
        elif probe._match_rule(item):
            skip_to = item.skip_after
    return out


def _written(items: list[Rule | Marker], setup: dict[str, str]) -> set[str] | None:
    """TX names some rule may set; a name built with a macro (`tx.header_name_%{tx.0}`) is kept as its
    literal prefix followed by `*`, and one that starts with a macro makes everything writable (None).
    A default (`SecRule &TX:x "@eq 0" "setvar:tx.x=..."`) does not count for a name the setup gives."""
    names: set[str] = set()
    for item in items:
        if isinstance(item, Marker):
            continue
        for rule in (item, *item.chained):
            default = (len(rule.targets) == 1 and rule.targets[0].count and rule.targets[0].collection == "TX"
                       and (rule.targets[0].selector or "").lower() in setup)
            for sv in rule.setvars:
                if "%{" in sv.name:
                    prefix = sv.name.split("%{", 1)[0]
                    if not prefix:
                        return None
                    names.add(prefix + "*")
                    continue
                if not (default and sv.name == (rule.targets[0].selector or "").lower()):
                    names.add(sv.name)
    return names


def _is_static_gate(rule: Rule, written: set[str] | None) -> bool:
    if written is None or not rule.skip_after or rule.chained or rule.setvars or rule.ctls or rule.deny:
        return False
    for var in rule.targets:
        if var.collection != "TX" or var.selector is None or var.is_regex:
            return False
        name = var.selector.lower()
        if name in written or any(w.endswith("*") and name.startswith(w[:-1]) for w in written):
            return False
    return not rule.excludes


def _set_source(pattern: str) -> str:
    source = "(?sm)" + pattern
    return possessive_to_greedy(source) if "*+" in source or "++" in source else source


def _compile_set(sources: list[str]) -> Callable[[str], list[int]]:
    rule_set = re2.Set.SearchSet(RE2_OPTIONS)
    for source in sources:
        rule_set.Add(source)
    rule_set.Compile()
    match = rule_set.Match
    return lambda text: match(text) or []


class Transaction:
    """One request evaluated against a Program. Not shared between requests."""

    def __init__(self, program: Program, request: CrsRequest, tx: dict[str, str]) -> None:
        self.program = program
        self.request = request
        self.tx = dict(tx)
        self.removed_ids: set[str] = set()
        self.removed_tags: set[str] = set()
        self.removed_targets: dict[str, list[VarSpec]] = {}
        self.removed_tag_targets: list[tuple[str, VarSpec]] = []
        self.hits: list[Hit] = []
        self.matched_var = ""
        self.matched_var_name = ""
        self.matched_vars: list[tuple[str, str]] = []
        self._transformed: dict[tuple[tuple[str, ...], str], str] = {}
        self._set_hits: dict[tuple[tuple[tuple[str, ...], str], str], frozenset[int]] = {}
        self._selected: dict[VarSpec, list[tuple[str, str]]] = {}
        self._prefilter: dict[tuple[tuple[str, ...], str], frozenset[int]] = {}
        self._values_cache: dict[tuple[tuple[VarSpec, ...], tuple[VarSpec, ...]], list[tuple[str, str]]] = {}

    # ------------------------------------------------------------------ run
    def run(self) -> Outcome:
        for phase in (1, 2):
            denied = self._phase(self.program.phases[phase])
            if denied is not None:
                return Outcome(denied, self.hits, self.tx)
        return Outcome(None, self.hits, self.tx)

    def _phase(self, items: list[Rule | Marker]) -> str | None:
        skip_to: str | None = None
        for item in items:
            if isinstance(item, Marker):
                if skip_to is not None and item.name == skip_to:
                    skip_to = None
                continue
            if skip_to is not None or item.id in self.removed_ids or self._removed_by_tag(item):
                continue
            if self._evaluate(item):
                if item.deny:
                    return item.id
                if item.skip_after:
                    skip_to = item.skip_after
        return None

    def _removed_by_tag(self, rule: Rule) -> bool:
        return bool(self.removed_tags) and any(t in self.removed_tags for t in rule.tags)

    # ------------------------------------------------------------ one rule
    def _evaluate(self, rule: Rule) -> bool:
        if rule.set_index >= 0 and rule.set_index not in self._group_hits(rule.set_key):
            return False  # no value this rule could read matches its pattern: skip without looking at targets
        matches = self._match_rule(rule)
        if not matches:
            return False
        # setvar runs in each rule of a chain as it matches, once per matched value (with that value's
        # MATCHED_VAR and captures), before the next rule is evaluated: CRS 931130's chained rule reads the
        # TX variable its head just set. ctl waits for the whole chain.
        for child in rule.chained:
            if not self._match_rule(child):
                return False
        for member in (rule, *rule.chained):
            for ctl in member.ctls:
                self._ctl(ctl)
        if rule.log:
            name, value = matches[0]
            if len(self.hits) < MAX_MATCHES:
                self.hits.append(Hit(rule.id, name, value, rule.tags, rule.severity, rule.paranoia))
        return True

    def _group_hits(self, group: tuple[tuple[str, ...], str]) -> frozenset[int]:
        """Every Set index that can match a value of the chain's variables: one Set pass over all the
        transformed values joined by newlines (computed once per chain and request).

        A superset of the per-value matches: patterns run with MULTILINE, so `^`/`$` hold at each newline as at
        a value's edges, and `\\b` sees the newline as the non-word edge it replaces; patterns with `\\A` or
        `\\z` are kept out of the Sets. The rules found here are then matched value by value."""
        hits = self._prefilter.get(group)
        if hits is None:
            chain, separator = group
            texts: list[str] = []
            transforms = self.program.group_transforms[group]
            for collection in self.program.group_targets[group]:
                if collection in SCALARS:
                    value = self.request.scalars.get(collection)
                    values = [] if value is None else [value]
                else:
                    values = [v for _, v in self.request.pairs(collection)]
                for value in values:
                    key = (chain, value)
                    text = self._transformed.get(key)
                    if text is None:
                        text = value
                        for transform in transforms:
                            text = transform(text)
                        self._transformed[key] = text
                    texts.append(text)
            hits = self._prefilter[group] = frozenset(self.program.sets[group](separator.join(texts))) if texts \
                else frozenset()
        return hits

    def _match_rule(self, rule: Rule) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        values = self._values(rule)  # before MATCHED_VARS is reset: a chained rule reads its parent's
        if rule.joinable and len(values) > 1:
            # one search over every transformed value joined by newlines: no match there, no match anywhere
            joined = "\n".join(self._transform(rule, v) for _, v in values)
            if rule.match(joined, self.expand) is None:
                return found
        elif rule.multi_match and rule.joinable_stages and len(values) > 1 and not self._any_stage(rule, values):
            return found
        self.matched_vars = []
        for name, value in values:
            groups = self._match_value(rule, value)
            if groups is None:
                continue
            found.append((name, value))
            self.matched_var, self.matched_var_name = value, name
            self.matched_vars.append((name, value))
            if rule.capture:
                for i in range(10):
                    if i < len(groups):
                        self.tx[str(i)] = groups[i]
                    else:
                        self.tx.pop(str(i), None)
            for sv in rule.setvars:
                self._setvar(sv)
        return found

    def _any_stage(self, rule: Rule, values: list[tuple[str, str]]) -> bool:
        """multiMatch: whether the operator matches any value at any transformation stage, trying each stage
        once on all values joined by newlines (a superset, as for the Set prefilter)."""
        texts = [v for _, v in values]
        if rule.match("\n".join(texts), self.expand) is not None:
            return True
        for transform in rule.transforms:
            texts = [transform(t) for t in texts]
            if rule.match("\n".join(texts), self.expand) is not None:
                return True
        return False

    def _match_value(self, rule: Rule, value: str) -> tuple[str, ...] | None:
        if rule.set_index >= 0:
            set_key = (rule.set_key, value)
            hits = self._set_hits.get(set_key)
            if hits is None:
                text = self._transform(rule, value)
                hits = self._set_hits[set_key] = frozenset(self.program.sets[rule.set_key](text))
            if rule.set_index not in hits:
                return None
            if not rule.capture:
                return ("",)
        if rule.multi_match:
            current = value
            groups = rule.match(current, self.expand)
            for transform in rule.transforms:
                nxt = transform(current)
                if nxt is not current and nxt != current:
                    current = nxt
                    groups = groups or rule.match(current, self.expand)
            return groups
        return rule.match(self._transform(rule, value), self.expand)

    def _transform(self, rule: Rule, value: str) -> str:
        if not rule.transforms:
            return value
        key = (rule.chain_key, value)
        out = self._transformed.get(key)
        if out is None:
            out = value
            for transform in rule.transforms:
                out = transform(out)
            self._transformed[key] = out
        return out

    # ------------------------------------------------------------ variables
    def _values(self, rule: Rule) -> list[tuple[str, str]]:
        removed = self.removed_targets.get(rule.id, ())
        # ctl:ruleRemoveTargetByTag; API-aware scoping also names single rules by id here
        tag_removed = [v for t, v in self.removed_tag_targets if t == rule.id or t in rule.tags] \
            if self.removed_tag_targets else []
        if removed or tag_removed or not rule.static_targets:
            return self._collect(rule, removed, tag_removed)
        # ~100 CRS rules read the same target list: build it once per transaction
        key = (rule.targets, rule.excludes)
        values = self._values_cache.get(key)
        if values is None:
            values = self._values_cache[key] = self._collect(rule, removed, tag_removed)
        return values

    def _collect(self, rule: Rule, removed: list[VarSpec] | tuple[VarSpec, ...],
                 tag_removed: list[VarSpec]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for var in rule.targets:
            if var.count:
                out.append((f"&{var.collection}", str(len(self._select(var)))))
                continue
            if var.collection in SCALARS:
                value = self._scalar(var.collection)
                if value is not None and not _excluded(var.collection, var.collection, removed, tag_removed):
                    out.append((var.collection, value))
                continue
            for key, value in self._select(var):
                if rule.excludes and any(_key_selected(e, key) for e in rule.excludes
                                         if e.collection == var.collection):
                    continue
                if (removed or tag_removed) and _excluded(var.collection, key, removed, tag_removed):
                    continue
                out.append((f"{var.collection}:{key}", value))
        return out

    def _select(self, var: VarSpec) -> list[tuple[str, str]]:
        collection = var.collection
        if collection == "TX":
            if var.selector is not None and not var.is_regex:
                value = self.tx.get(var.selector.lower())
                return [] if value is None else [(var.selector.lower(), value)]
            pairs = list(self.tx.items())
        elif collection == "MATCHED_VARS":
            pairs = list(self.matched_vars)
        elif collection == "MATCHED_VARS_NAMES":
            pairs = [(n, n) for n, _ in self.matched_vars]
        else:
            cached = self._selected.get(var)
            if cached is None:  # request collections do not change during the transaction
                pairs = self.request.pairs(collection)
                cached = self._selected[var] = pairs if var.selector is None else \
                    [(k, v) for k, v in pairs if _key_selected(var, k)]
            return cached
        if var.selector is None:
            return pairs
        return [(k, v) for k, v in pairs if _key_selected(var, k)]

    def _scalar(self, name: str) -> str | None:
        if name == "MATCHED_VAR":
            return self.matched_var
        if name == "MATCHED_VAR_NAME":
            return self.matched_var_name
        return self.request.scalars.get(name)

    # -------------------------------------------------------------- actions
    def expand(self, text: str) -> str:
        """`%{tx.name}`, `%{TX.0}`, `%{MATCHED_VAR}`, `%{REQUEST_HEADERS.host}`: macro expansion."""
        if "%{" not in text:
            return text
        return _MACRO.sub(self._macro, text)

    def _macro(self, m: re.Match[str]) -> str:
        collection, key = m.group(1).upper(), m.group(2)
        if key is None:
            return self._scalar(collection) or ""
        if collection == "TX":
            return self.tx.get(key.lower(), "")
        lowered = key.lower()
        return next((v for k, v in self.request.pairs(collection) if k.lower() == lowered), "")

    def _setvar(self, sv: Setvar) -> None:
        if not sv.name:
            return
        name = self.expand(sv.name) if "%{" in sv.name else sv.name
        if sv.op == "!":
            self.tx.pop(name, None)
            return
        value = self.expand(sv.value)
        if sv.op == "=":
            self.tx[name] = value
            return
        current = _atoi(self.tx.get(name, "0"))
        delta = _atoi(value)
        self.tx[name] = str(current + delta if sv.op == "+" else current - delta)

    def _ctl(self, ctl: Ctl) -> None:
        value = self.expand(ctl.value)
        if ctl.name == "ruleRemoveById":
            for part in value.split():
                low, _, high = part.partition("-")
                if high and low.isdigit() and high.isdigit():
                    self.removed_ids.update(r for r in self.program.rules
                                            if r.isdigit() and int(low) <= int(r) <= int(high))
                else:
                    self.removed_ids.add(part)
        elif ctl.name == "ruleRemoveByTag":
            self.removed_tags.add(value)
        elif ctl.name == "ruleRemoveTargetById":
            rule_id, _, target = value.partition(";")
            self.removed_targets.setdefault(rule_id, []).extend(parse_variables(target, "ctl", 0))
        elif ctl.name == "ruleRemoveTargetByTag":
            tag, _, target = value.partition(";")
            self.removed_tag_targets.extend((tag, v) for v in parse_variables(target, "ctl", 0))
        # forceRequestBodyVariable: REQUEST_BODY is always there when a body is (as in ModSecurity v3)


def _key_selected(var: VarSpec, key: str) -> bool:
    selector = var.selector
    if selector is None:
        return True
    if selector[0] == "/" and selector[-1] == "/" and len(selector) >= 2:
        return _selector_regex(selector).search(key) is not None
    return key.lower() == selector.lower()


_SELECTORS: dict[str, re.Pattern[str]] = {}


def _selector_regex(selector: str) -> re.Pattern[str]:
    compiled = _SELECTORS.get(selector)
    if compiled is None:
        if len(_SELECTORS) > 4096:
            _SELECTORS.clear()  # bounded; selectors come from rule files and exceptions, not requests
        compiled = _SELECTORS[selector] = re.compile(selector[1:-1], re.IGNORECASE)
    return compiled


def _excluded(collection: str, key: str, removed: list[VarSpec] | tuple[VarSpec, ...],
              tag_removed: list[VarSpec]) -> bool:
    for var in (*removed, *tag_removed):
        if var.collection == collection and (var.selector is None or _key_selected(var, key)):
            return True
    return False


def _atoi(text: str) -> int:
    if text.isdigit():
        return int(text)
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0
