"""CRS rules compiled into Bastion's matcher (once per config load).

Each SecRule becomes a `Rule`: its targets, its transformation chain as functions, its operator as a function and
its actions as data. Every static `@rx` joins the RE2 Set of its transformation chain (`Program.sets`), so at
run time a value is transformed once per chain and all of a chain's values are matched in one pass. What does
not depend on the request is decided here: paranoia and exclusion-package gates are folded, and the leading
initialisation rules that only touch TX are run once (`Program.initial_tx`).
"""

from __future__ import annotations

import re

import re2

from bastion.stages.input.crs import injection
from bastion.stages.input.crs.engine import Transaction
from bastion.stages.input.crs.operators import FALLBACKS, RE2_OPTIONS, Operators
from bastion.stages.input.crs.program import MACRO, SCALARS, Ctl, Prefilter, Program, Rule, SetMatch, Setvar
from bastion.stages.input.crs.request import CrsRequest
from bastion.stages.input.crs.seclang import Action, Marker, RuleSpec, SecLangError, VarSpec
from bastion.stages.input.crs.transforms import JOINED, TRANSFORMS, Transform

# Variables the engine can present (collections first); anything else in a rule is an error.
COLLECTIONS = frozenset({
    "ARGS", "ARGS_GET", "ARGS_POST", "ARGS_NAMES", "ARGS_GET_NAMES", "ARGS_POST_NAMES", "REQUEST_HEADERS",
    "REQUEST_HEADERS_NAMES", "REQUEST_COOKIES", "REQUEST_COOKIES_NAMES", "FILES", "FILES_NAMES",
    "MULTIPART_PART_HEADERS", "TX", "XML", "IP", "GEO", "MATCHED_VARS", "MATCHED_VARS_NAMES",
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
_STATEFUL = frozenset({"TX", "MATCHED_VAR", "MATCHED_VARS", "MATCHED_VAR_NAME", "MATCHED_VARS_NAMES"})
_SET_OPERATORS = frozenset({"rx", "pm", "pmFromFile", "pmf"})


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
    levels = [t.rsplit("/", 1)[1] for t in tags if t.startswith("paranoia-level/")]
    for level in levels:  # int() of anything else raised ValueError (found by fuzzing)
        if not (level.isascii() and level.isdigit()):
            raise SecLangError(file, line, f"tag paranoia-level/{level}: the level must be a number")
    paranoia = int(levels[0]) if levels else 0
    severity_text = (spec.action("severity") or "").upper()
    severity = _SEVERITIES.get(severity_text, int(severity_text) if severity_text.isdigit() else None)
    rule = Rule(
        id=rule_id, phase=phase, file=file, line=line,
        targets=tuple(v for v in spec.variables if not v.exclude),
        excludes=tuple(v for v in spec.variables if v.exclude),
        chain_key=tuple(names), transforms=tuple(TRANSFORMS[n] for n in names),
        joined_transforms=tuple(JOINED.get(n) for n in names),
        match=operators.build(spec.operator, rule_id, file, line,
                              capture=any(a.name == "capture" for a in spec.actions)),
        multi_match=any(a.name == "multiMatch" for a in spec.actions),
        capture=any(a.name == "capture" for a in spec.actions),
        setvars=setvars, ctls=ctls, skip_after=spec.action("skipAfter"),
        deny=any(a.name in ("deny", "drop") for a in spec.actions),
        msg=spec.action("msg") or "", tags=tags, severity=severity, paranoia=paranoia,
        log=not any(a.name == "nolog" for a in spec.actions),
    )
    edge_free = not _TEXT_EDGES.search(spec.operator.argument)
    if spec.operator.name in _SET_OPERATORS and not spec.operator.negated and "%{" not in spec.operator.argument \
            and rule_id not in FALLBACKS and parent is None and edge_free \
            and not any(v.count for v in rule.targets):
        rule.set_index = -2  # a Set candidate; build_program assigns the index
    rule.static_operator = not _TX_MACRO.search(spec.operator.argument)
    rule.constant_operator = "%{" not in spec.operator.argument
    rule.static_targets = all(v.collection not in _STATEFUL and v.collection not in ("MATCHED_VAR_NAME",)
                              for v in rule.targets)
    joins = spec.operator.name in ("rx", "pm", "pmFromFile", "pmf") and not spec.operator.negated and edge_free \
        and "%{" not in spec.operator.argument
    # a byte outside the range in any value is one outside the range in the values joined by newlines, when
    # the newline itself is allowed (920270: 1-255)
    joins = joins or (spec.operator.name == "validateByteRange" and not spec.operator.negated
                      and _allows_newline(spec.operator.argument))
    rule.joinable = joins and not rule.multi_match
    # NUL joins where no line anchor needs newlines: far fewer patterns match it (932115's `\n` alternative
    # matched every newline between arguments); @validateByteRange needs the newline (NUL is out of range)
    if spec.operator.name in ("pm", "pmFromFile", "pmf") or (spec.operator.name == "rx"
                                                             and not _anchored(spec.operator.argument)):
        rule.separator = "\x00"
    rule.joinable_stages = joins and rule.multi_match
    if not spec.operator.negated:  # libinjection over all the rule's texts in one C call (None: not built)
        rule.injection_hits = {"detectSQLi": injection.hits_sqli, "detectXSS": injection.hits_xss}.get(
            spec.operator.name)
    rule.chained = tuple(compile_rule(c, operators, rule) for c in spec.chained)
    return rule


def _allows_newline(ranges: str) -> bool:
    for part in ranges.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (high or low).isdigit() and int(low) <= 10 <= int(high or low):
            return True
    return False


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
    targets: dict[tuple[tuple[str, ...], str], set[VarSpec]] = {}
    values_keys: dict[tuple[tuple[VarSpec, ...], tuple[VarSpec, ...]], int] = {}
    interned: dict[VarSpec, VarSpec] = {}
    for item in items:
        if isinstance(item, Marker):
            for lst in phases.values():
                lst.append(item)
            continue
        rule = compile_rule(item, operators)
        if rule.phase not in phases:
            continue  # response phases: out of scope for request inspection
        for member in (rule, *rule.chained):
            # one object per distinct variable: the engine caches a request's values by the VarSpec's id
            member.targets = tuple(interned.setdefault(v, v) for v in member.targets)
            member.excludes = tuple(interned.setdefault(v, v) for v in member.excludes)
            member.values_key = values_keys.setdefault((member.targets, member.excludes), len(values_keys))
        phases[rule.phase].append(rule)
        rules[rule.id] = rule
        source = operators.set_source(item.operator, item.file, item.line) if rule.set_index == -2 else None
        rule.set_index = -1
        if source is not None and rule.paranoia <= active_paranoia \
                and all(v.collection not in _STATEFUL for v in rule.targets):
            # values are joined with a newline where the pattern has line anchors (they then hold at each
            # value's edges), else with NUL, which far fewer patterns can match (fewer false candidates)
            anchored = item.operator.name == "rx" and _anchored(item.operator.argument)
            separator = "\n" if anchored else "\x00"
            # multiMatch tries the operator after every transformation: its pattern joins every stage's Set
            stages = [rule.chain_key[:i] for i in range(len(rule.chain_key) + 1)] if rule.multi_match \
                else [rule.chain_key]
            refs = []
            for stage in stages:
                key = (stage, separator)
                group = patterns.setdefault(key, [])
                refs.append((key, len(group)))
                group.append(source)
                targets.setdefault(key, set()).update(rule.targets)
            rule.prefilter = tuple(refs)
            if not rule.multi_match:
                rule.set_key, rule.set_index = refs[0]
    sets = {key: _compile_set(srcs) for key, srcs in patterns.items()}
    # gates on the setup, then the initialisation rules, then gates on what they set (e.g. the sampling gate
    # `TX:sampling_percentage "@eq 100"`); a TX name any remaining rule may write is never folded
    for number in phases:
        phases[number] = _fold_gates(phases[number], setup, _written([*phases[1], *phases[2]], setup))
    phases[1], initial = _fold_initialisation(phases[1], setup)
    reads = _tx_reads([i for i in items if not isinstance(i, Marker)])
    for number in phases:
        phases[number] = _fold_gates(phases[number], initial, _written([*phases[1], *phases[2]], initial))
        phases[number] = [i for i in phases[number] if isinstance(i, Marker) or not _dead(i, reads)]
    group_targets = {k: _distinct(v) for k, v in targets.items()}
    return Program(phases, sets, rules, group_targets, initial, _prefilter(phases, sets, group_targets))


def _prefilter(phases: dict[int, list[Rule | Marker]], sets: dict[tuple[tuple[str, ...], str], SetMatch],
               group_targets: dict[tuple[tuple[str, ...], str], tuple[VarSpec, ...]]) -> Prefilter | None:
    """The Sets as one straight run (see `Prefilter`): a slot per distinct variable list, a step per distinct
    (variable list, chain prefix), and for each Set the rule positions each of its indices stands for."""
    if not sets:
        return None
    candidates: dict[tuple[tuple[str, ...], str], dict[int, list[tuple[int, int]]]] = {key: {} for key in sets}
    always: dict[int, tuple[int, ...]] = {}
    for number, items in phases.items():
        walked: list[int] = []
        for position, item in enumerate(items):
            if isinstance(item, Marker) or not item.prefilter:
                walked.append(position)
                continue
            for key, index in item.prefilter:
                candidates[key].setdefault(index, []).append((number, position))
        always[number] = tuple(walked)
    # a Set whose rules were all folded away (901318's sha1 of UNIQUE_ID, say) is not run, nor its steps
    live = [key for key in sets if candidates[key]]
    base_slot: dict[tuple[VarSpec, ...], int] = {}
    for key in live:
        base_slot.setdefault(group_targets[key], len(base_slot))
    slot_of: dict[tuple[int, tuple[str, ...]], int] = {(slot, ()): slot for slot in base_slot.values()}
    steps: list[tuple[int, Transform | None, Transform]] = []
    for key in live:
        base, chain = base_slot[group_targets[key]], key[0]
        for i in range(1, len(chain) + 1):
            if (base, chain[:i]) not in slot_of:
                slot_of[(base, chain[:i])] = len(base_slot) + len(steps)
                steps.append((slot_of[(base, chain[:i - 1])], JOINED.get(chain[i - 1]), TRANSFORMS[chain[i - 1]]))
    matchers = tuple((slot_of[(base_slot[group_targets[key]], key[0])], key[1], sets[key],
                      {index: tuple(at) for index, at in candidates[key].items()})
                     for key in live)
    return Prefilter(tuple(base_slot), tuple(steps), matchers, always)


def _distinct(targets: set[VarSpec]) -> tuple[VarSpec, ...]:
    """A Set's variables without the selected keys of a collection it reads whole (each value once)."""
    whole = {v.collection for v in targets if v.selector is None}
    return tuple(sorted((v for v in targets if v.selector is None or v.collection not in whole),
                        key=lambda v: (v.collection, v.selector or "")))


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
# `^`/`$` outside escapes (`\$(`) and character classes (`[^a-z]`): line anchors, which need newline separators
_ESCAPES = re.compile(r"\\.")
_CLASSES = re.compile(r"\[[^\]]*\]")
_ANCHORS = re.compile(r"[\^$]")


def _anchored(pattern: str) -> bool:
    return _ANCHORS.search(_CLASSES.sub("", _ESCAPES.sub("", pattern))) is not None


def _fold_gates(items: list[Rule | Marker], setup: dict[str, str], written: set[str] | None) -> list[Rule | Marker]:
    """Constant-fold the gates CRS puts in front of rule groups, e.g. `SecRule TX:EXECUTING_PARANOIA_LEVEL
    "@lt 2" "skipAfter:..."` or `SecRule &TX:crs_exclusions_drupal "@eq 0" "skipAfter:..."`: a gate that only
    reads TX variables no rule can change (set by the config, or never set) either always skips (its rules
    are dropped) or never does (the gate is dropped). `written`: the TX names some rule of any phase sets."""
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
        if _is_static_gate(item, written):
            if probe._match_rule(item):
                skip_to = item.skip_after
            continue
        if _reads_constant_tx(item, written) and not _fresh(setup)._match_rule(item):
            continue  # its first rule never matches (920360: `&TX:ARG_NAME_LENGTH "@eq 1"`): the chain never runs
        members = (item, *item.chained)
        if item.skip_after and item.chained and not item.deny \
                and all(_reads_constant_tx(m, written) and not m.setvars and not m.ctls for m in members):
            # a chain of gates (912100: three `&TX:dos_* "@eq 0"`)
            probe_chain = _fresh(setup)
            if all(probe_chain._match_rule(m) for m in members):
                skip_to = item.skip_after
            continue
        out.append(item)
    return out


def _tx_reads(specs: list[RuleSpec]) -> tuple[set[str], list[re.Pattern[str]]] | None:
    """Every TX name a rule can read (targets, and macros in operators, setvar and ctl values), as literal
    names and `/regex/` selectors; None when some rule reads the whole collection."""
    names: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    stack = list(specs)
    while stack:
        spec = stack.pop()
        stack.extend(spec.chained)
        for var in spec.variables:
            if var.collection != "TX" or var.exclude:
                continue
            if var.selector is None:
                return None
            if var.is_regex:
                patterns.append(re.compile(var.selector[1:-1], re.IGNORECASE))
            else:
                names.add(var.selector.lower())
        texts = [spec.operator.argument] + [a.value or "" for a in spec.actions if a.name in ("setvar", "ctl")]
        for text in texts:
            for m in MACRO.finditer(text):
                if m.group(1).upper() == "TX" and m.group(2):
                    names.add(m.group(2).lower())
    return names, patterns


def _dead(rule: Rule, reads: tuple[set[str], list[re.Pattern[str]]] | None) -> bool:
    """A rule whose only effect is setting TX names nothing reads (901318 hashes the User-Agent for the
    persistent IP collection, which Bastion does not keep): it is dropped. Scores stay (the audit reads them)."""
    if reads is None or rule.chained or rule.log or rule.ctls or rule.skip_after or rule.deny or rule.capture:
        return False
    names, patterns = reads
    for sv in rule.setvars:
        if not sv.name:
            continue  # a persistent collection (ip., global.): not kept
        if "%{" in sv.name or "score" in sv.name or sv.name in names or any(p.search(sv.name) for p in patterns):
            return False
    return True


def _fresh(setup: dict[str, str]) -> Transaction:
    return Transaction(Program({1: [], 2: []}, {}), CrsRequest(), setup)


def _reads_constant_tx(rule: Rule, written: set[str] | None) -> bool:
    """The rule reads only TX names no rule writes, with an operator without macros: its match is constant."""
    if written is None or rule.excludes or not rule.constant_operator or not rule.targets:
        return False
    for var in rule.targets:
        if var.collection in ("IP", "GEO"):
            continue  # always empty here (docs/input.md): 949100 `IP:REPUT_BLOCK_FLAG "@eq 1"` never matches
        if var.collection != "TX" or var.selector is None or var.is_regex:
            return False
        name = var.selector.lower()
        if name in written or any(w.endswith("*") and name.startswith(w[:-1]) for w in written):
            return False
    return True


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


def _compile_set(sources: list[str]) -> SetMatch:
    rule_set = re2.Set.SearchSet(RE2_OPTIONS)
    for source in sources:
        rule_set.Add(source)
    rule_set.Compile()
    match: SetMatch = rule_set._set.Match  # the wrapper's str check and encode, skipped
    return match
