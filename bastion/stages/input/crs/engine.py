"""The per-request evaluation of compiled CRS rules: a ModSecurity v3 transaction.

Phase 1 then phase 2, rules in file order, `skipAfter` to a `SecMarker`, chains, `setvar` as each rule matches
and once per matched value (so two bad arguments score twice, as in ModSecurity), `capture`, `MATCHED_VAR(S)`,
`ctl:ruleRemove*` for the rest of the transaction, and a `deny` (949110 in anomaly mode) ending it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from bastion.immutable import freeze_pure
from bastion.stages.input.crs.program import MACRO, MAX_MATCHES, SCALARS, Ctl, Program, Rule, Setvar
from bastion.stages.input.crs.request import CrsRequest
from bastion.stages.input.crs.seclang import Marker, VarSpec, parse_variables
from bastion.stages.input.crs.transforms import SEPARATOR, Transform


class Hit:
    """One rule that matched: its id, where (e.g. `ARGS:json.user.name`), the matched text and metadata.
    Immutable, compared by value. Not a frozen dataclass: its generated `__init__` runs `object.__setattr__` per
    field even in the compiled build (~6 K instructions a hit; `bastion.immutable`)."""

    __slots__ = ("paranoia", "rule_id", "severity", "tags", "value", "variable")

    def __init__(self, rule_id: str, variable: str, value: str, tags: tuple[str, ...], severity: int | None,
                 paranoia: int) -> None:
        self.rule_id: Final = rule_id
        self.variable: Final = variable
        self.value: Final = value
        self.tags: Final = tags
        self.severity: Final = severity
        self.paranoia: Final = paranoia

    def _values(self) -> tuple[str, str, str, tuple[str, ...], int | None, int]:
        return self.rule_id, self.variable, self.value, self.tags, self.severity, self.paranoia

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hit):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (f"Hit(rule_id={self.rule_id!r}, variable={self.variable!r}, value={self.value!r}, "
                f"tags={self.tags!r}, severity={self.severity!r}, paranoia={self.paranoia!r})")


freeze_pure(Hit)  # the pure build refuses what the compiled class cannot do


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
        self._set_rows_cache: dict[tuple[int, tuple[tuple[str, ...], str]],
                                   tuple[list[tuple[str, str]], list[str], list[frozenset[int]]]] = {}
        # keyed by the VarSpec's id: the entry holds the VarSpec, so the id is not reused while it is cached
        self._selected: dict[int, tuple[VarSpec, list[tuple[str, str]]]] = {}
        self._texts: dict[int, tuple[VarSpec, list[str]]] = {}
        self._values_cache: dict[int, list[tuple[str, str]]] = {}
        self._named_cache: dict[int, tuple[VarSpec, list[tuple[str, str]]]] = {}
        self._by_name: dict[str, dict[str, list[tuple[str, str]]]] = {}

    # ------------------------------------------------------------------ run
    def run(self) -> Outcome:
        walks = self._walks()
        for phase in (1, 2):
            denied = self._phase(self.program.phases[phase], walks[phase])
            if denied is not None:
                return Outcome(denied, self.hits, self.tx)
        return Outcome(None, self.hits, self.tx)

    def _phase(self, items: list[Rule | Marker], walk: Sequence[int]) -> str | None:
        skip_to: str | None = None
        for position in walk:
            item = items[position]
            if item.__class__ is Marker:
                if skip_to is not None and item.name == skip_to:
                    skip_to = None
                continue
            if skip_to is not None:
                continue
            rule: Rule = item  # type: ignore[assignment]
            if rule.id in self.removed_ids or (self.removed_tags and self._removed_by_tag(rule)):
                continue
            if self._evaluate(rule):
                if rule.deny:
                    return rule.id
                if rule.skip_after:
                    skip_to = rule.skip_after
        return None

    def _removed_by_tag(self, rule: Rule) -> bool:
        return bool(self.removed_tags) and any(t in self.removed_tags for t in rule.tags)

    def _walks(self) -> dict[int, Sequence[int]]:
        """Per phase, the positions this request visits: every marker and rule without a prefilter, and the
        rules whose Set pattern matched some value they could read (any other rule cannot match: skipping it
        changes nothing). The Sets run before the first rule, in one straight run over the program's
        `Prefilter`: the values of a variable list joined by SEPARATOR, each transformation step applied once
        to the joined text (`transforms.JOINED`: exact, each value's own result), value by value when a value
        holds or decodes to SEPARATOR; each Set then matches its step's values joined by its separator.

        A superset of the per-value matches: patterns run with MULTILINE, so `^`/`$` hold at each newline as at
        a value's edges, and `\\b` sees the separator as the non-word edge it replaces; patterns with `\\A` or
        `\\z` are kept out of the Sets. The rules found here are then matched value by value."""
        phases = self.program.phases
        plan = self.program.prefilter
        if plan is None:
            return {number: range(len(items)) for number, items in phases.items()}
        slots: list[tuple[str | None, list[str] | None, int]] = []
        for variables in plan.bases:
            values: list[str] = []
            for var in variables:
                values += self._var_texts(var)
            slots.append((None, values, len(values) - 1))
        for parent, step, one in plan.steps:
            joined, texts, count = slots[parent]
            if count < 0:
                slots.append((None, texts, count))
                continue
            if step is not None and count > 0:
                if joined is None and texts is not None:
                    raw = SEPARATOR.join(texts)
                    if raw.count(SEPARATOR) == count:  # no value holds SEPARATOR: the joined form is exact
                        joined = raw
                        slots[parent] = (joined, texts, count)
                if joined is not None:
                    out = step(joined)
                    if out is joined:  # nothing to do on any value: the step's values are its parent's
                        slots.append((joined, texts, count))
                        continue
                    if out.count(SEPARATOR) == count:
                        slots.append((out, None, count))
                        continue
            source = texts if texts is not None else (joined or "").split(SEPARATOR)
            slots.append((None, [one(t) for t in source], count))
        found: dict[int, set[int]] = {number: set() for number in phases}
        for slot, separator, match, candidates in plan.matchers:
            joined, texts, count = slots[slot]
            if count < 0:
                continue
            text = joined.replace(SEPARATOR, separator) if joined is not None else separator.join(texts or ())
            for index in match(text.encode()):
                at = candidates.get(index)
                if at is not None:
                    for number, position in at:
                        found[number].add(position)
        return {number: sorted(found[number].union(plan.always[number])) if found[number] else plan.always[number]
                for number in phases}

    # ------------------------------------------------------------ one rule
    def _evaluate(self, rule: Rule) -> bool:
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

    def _transform_chain(self, chain: tuple[str, ...], transforms: tuple[Transform, ...], value: str) -> str:
        key = (chain, value)
        text = self._transformed.get(key)
        if text is None:
            text = value
            for transform in transforms:
                text = transform(text)
            self._transformed[key] = text
        return text

    def _match_rule(self, rule: Rule) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        # before MATCHED_VARS is reset: a chained rule reads its parent's; SecAction has no target and matches once
        values = self._values(rule) if rule.targets else [("", "")]
        if rule.joinable and len(values) > 1:
            # one search over every transformed value joined by its separator: no match there, none anywhere
            joined = rule.separator.join(self._transform(rule, v) for _, v in values)
            if rule.match(joined, self.expand) is None:
                return found
        elif rule.multi_match and rule.joinable_stages and len(values) > 1 and not self._any_stage(rule, values):
            return found
        # multiMatch over several values: each transformation once over all of them (942100, 941100)
        stages = self._stage_texts(rule, [v for _, v in values]) \
            if rule.multi_match and rule.transforms and len(values) > 1 else None
        if rule.set_index >= 0 and len(values) > 1:
            self._match_set_rule(rule, values, found)
            return found
        injected: set[int] | None = None
        if rule.injection_hits is not None:
            injected = self._injected(rule, values, stages)
            if injected is not None and not injected:
                self.matched_vars = []
                return found
        self.matched_vars = []
        index = -1
        for name, value in values:
            index += 1
            if injected is not None and not rule.capture:
                # libinjection called one of this value's texts injection (or none): the loop's answer
                if index not in injected:
                    continue
                groups: tuple[str, ...] | None = _NO_GROUPS
            elif injected is not None and index not in injected:
                continue
            else:
                groups = self._match_value(rule, value) if stages is None \
                    else self._match_stages(rule, value, stages, index)
            if groups is None:
                continue
            self._matched(rule, name, value, groups, found)
        return found

    def _match_set_rule(self, rule: Rule, values: list[tuple[str, str]], found: list[tuple[str, str]]) -> None:
        """The value loop of `_match_rule` for a rule whose pattern is in a Set, over several values: each
        value's Set answer from `_set_rows` (computed once for all the rules reading these values through this
        Set), then the rule's own regex only on the values whose answer holds its pattern, for the captures."""
        texts, rows = self._set_rows(rule, values)
        self.matched_vars = []
        index = -1
        wanted = rule.set_index
        for name, value in values:
            index += 1
            if wanted not in rows[index]:
                continue
            groups = rule.match(texts[index], self.expand) if rule.capture else _NO_GROUPS
            if groups is None:  # as `_match_value`: the Set's answer, then the rule's own regex for the groups
                continue
            self._matched(rule, name, value, groups, found)

    def _matched(self, rule: Rule, name: str, value: str, groups: tuple[str, ...],
                 found: list[tuple[str, str]]) -> None:
        """One value matched `rule`: MATCHED_VAR(S), the captures into TX:0-9, the rule's setvars."""
        found.append((name, value))
        self.matched_var, self.matched_var_name = value, name
        self.matched_vars.append((name, value))
        if rule.capture:
            for i, key in enumerate(_CAPTURES):
                if i < len(groups):
                    self.tx[key] = groups[i]
                else:
                    self.tx.pop(key, None)
        for sv in rule.setvars:
            self._setvar(sv)

    def _set_rows(self, rule: Rule, values: list[tuple[str, str]]) -> tuple[list[str], list[frozenset[int]]]:
        """Per value, its text after the rule's transformations and the Set's indices that match it (what
        `_match_value` finds value by value), once per (values list, Set) and transaction: 942190, 942270 and
        942360 read the same values through the same Set. The texts come from `_stage_texts` (joined where
        exact); a value's Set answer is shared with `_match_value` through `_set_hits`."""
        key = (id(values), rule.set_key)
        entry = self._set_rows_cache.get(key)
        if entry is not None:
            return entry[1], entry[2]
        raw = [v for _, v in values]
        texts = self._stage_texts(rule, raw)[-1] if rule.transforms else raw
        match = self.program.sets[rule.set_key]
        rows: list[frozenset[int]] = []
        index = -1
        for value in raw:
            index += 1
            set_key = (rule.set_key, value)
            hits = self._set_hits.get(set_key)
            if hits is None:
                hits = self._set_hits[set_key] = frozenset(match(texts[index].encode()))
            rows.append(hits)
        self._set_rows_cache[key] = (values, texts, rows)  # holds the list: its id is not reused meanwhile
        return texts, rows

    def _injected(self, rule: Rule, values: list[tuple[str, str]],
                  stages: list[list[str]] | None) -> set[int] | None:
        """@detectSQLi/@detectXSS: the indices of the values with a text libinjection calls injection, over
        every text the value loop below would try, in one C call (empty: no value matches). The loop tries each
        value and (multiMatch) each stage that changed it; here every value and every stage's text: a text not
        tried there equals one of the same value that is, so a value has a hit here exactly when the loop's
        operator matches it. None (check value by value) when a text has no UTF-8 form."""
        hits = rule.injection_hits
        assert hits is not None
        texts = [v for _, v in values]
        if not rule.multi_match:  # the chain's result per value (`_stage_texts`: joined where exact)
            found = hits(self._stage_texts(rule, texts)[-1] if rule.transforms else texts)
            return None if found is None else set(found)
        if stages is None:  # one value, or no transformation
            stages = []
            current = texts
            for transform in rule.transforms:
                current = [transform(t) for t in current]
                stages.append(current)
        tried = list(texts)
        previous = texts
        for stage in stages:  # each value's text after a stage that changed it (as `_match_stages` tries them)
            index = -1
            for text in stage:
                index += 1
                before = previous[index]
                if text is not before and text != before:
                    tried.append(text)
            previous = stage
        found = hits(tried)
        if not found:
            return None if found is None else set()
        owners = list(range(len(texts)))  # the value each tried text belongs to, in the same walk (hits only)
        previous = texts
        for stage in stages:
            index = -1
            for text in stage:
                index += 1
                before = previous[index]
                if text is not before and text != before:
                    owners.append(index)
            previous = stage
        return {owners[i] for i in found}

    def _any_stage(self, rule: Rule, values: list[tuple[str, str]]) -> bool:
        """multiMatch: whether the operator matches any value at any transformation stage, trying each stage
        once on all values joined by newlines (a superset, as for the Set prefilter)."""
        texts = [v for _, v in values]
        if rule.match(rule.separator.join(texts), self.expand) is not None:
            return True
        for transform in rule.transforms:
            texts = [transform(t) for t in texts]
            if rule.match(rule.separator.join(texts), self.expand) is not None:
                return True
        return False

    def _stage_texts(self, rule: Rule, texts: list[str]) -> list[list[str]]:
        """multiMatch: every value's text after each of the rule's transformations (stage i + 1 is T_i of stage
        i, as `_match_value` computes them one value at a time). A step with a JOINED form runs once on the
        values joined by SEPARATOR, exact when no value holds or gains SEPARATOR (counted, as in `_walks`);
        any other step, value by value. Stage 0 (the values themselves) is not in the list."""
        stages: list[list[str]] = []
        count = len(texts) - 1
        current = texts
        joined: str | None = None
        forms = rule.joined_transforms
        step = -1
        for transform in rule.transforms:
            step += 1
            together = forms[step] if step < len(forms) else None  # a Rule built by hand may have no forms
            if together is not None:
                if joined is None:
                    raw = SEPARATOR.join(current)
                    if raw.count(SEPARATOR) == count:
                        joined = raw
                if joined is not None:
                    out = together(joined)
                    if out is joined:  # nothing to do on any value
                        stages.append(current)
                        continue
                    if out.count(SEPARATOR) == count:
                        joined = out
                        current = out.split(SEPARATOR)
                        stages.append(current)
                        continue
            current = [transform(t) for t in current]
            joined = None
            stages.append(current)
        return stages

    def _match_stages(self, rule: Rule, value: str, stages: list[list[str]], index: int) -> tuple[str, ...] | None:
        """`_match_value` for a multiMatch rule with its stages precomputed: the operator on the value, then on
        each stage that changed the text, until one matches."""
        current = value
        groups = rule.match(current, self.expand)
        for texts in stages:
            nxt = texts[index]
            if nxt is not current and nxt != current:
                current = nxt
                groups = groups or rule.match(current, self.expand)
        return groups

    def _match_value(self, rule: Rule, value: str) -> tuple[str, ...] | None:
        if rule.set_index >= 0:
            set_key = (rule.set_key, value)
            hits = self._set_hits.get(set_key)
            if hits is None:
                text = self._transform(rule, value)
                hits = self._set_hits[set_key] = frozenset(self.program.sets[rule.set_key](text.encode()))
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
        return self._transform_chain(rule.chain_key, rule.transforms, value)

    # ------------------------------------------------------------ variables
    def _values(self, rule: Rule) -> list[tuple[str, str]]:
        removed = self.removed_targets.get(rule.id, ())
        # ctl:ruleRemoveTargetByTag; API-aware scoping also names single rules by id here
        tag_removed = [v for t, v in self.removed_tag_targets if t == rule.id or t in rule.tags] \
            if self.removed_tag_targets else []
        if removed or tag_removed or not rule.static_targets:
            return self._collect(rule, removed, tag_removed)
        # ~100 CRS rules read the same target list: build it once per transaction
        values = self._values_cache.get(rule.values_key)
        if values is None:
            values = self._values_cache[rule.values_key] = self._collect(rule, removed, tag_removed)
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
            if not (rule.excludes or removed or tag_removed):
                out += self._named(var)
                continue
            for key, value in self._select(var):
                if rule.excludes and any(_key_selected(e, key) for e in rule.excludes
                                         if e.collection == var.collection):
                    continue
                if (removed or tag_removed) and _excluded(var.collection, key, removed, tag_removed):
                    continue
                out.append((f"{var.collection}:{key}", value))
        return out

    def _named(self, var: VarSpec) -> list[tuple[str, str]]:
        """A collection variable's (`COLLECTION:key`, value) pairs, built once per transaction when its selection
        cannot change (request collections; TX and MATCHED_VARS are selected anew on every call)."""
        if var.collection in _STATEFUL:
            return [(f"{var.collection}:{key}", value) for key, value in self._select(var)]
        entry = self._named_cache.get(id(var))
        if entry is not None:
            return entry[1]
        pairs = [(f"{var.collection}:{key}", value) for key, value in self._select(var)]
        self._named_cache[id(var)] = (var, pairs)
        return pairs

    def _var_texts(self, var: VarSpec) -> list[str]:
        """A request variable's values (a scalar's one value), once per transaction: several Sets read it."""
        entry = self._texts.get(id(var))
        if entry is not None:
            return entry[1]
        if var.collection in SCALARS:
            value = self.request.scalars.get(var.collection)
            texts = [] if value is None else [value]
        else:
            texts = [v for _, v in self._select(var)]
        self._texts[id(var)] = (var, texts)
        return texts

    def _select(self, var: VarSpec) -> list[tuple[str, str]]:
        entry = self._selected.get(id(var))
        if entry is not None:  # request collections do not change during the transaction
            return entry[1]
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
            pairs = self.request.collections.get(collection) or []
            selector = var.selector
            if selector is None:
                cached = pairs
            elif len(selector) >= 2 and selector[0] == "/" and selector[-1] == "/":
                search = _selector_regex(selector).search
                cached = [(k, v) for k, v in pairs if search(k) is not None]
            else:  # by name: one lower-cased index of the collection per transaction, then a lookup
                index = self._by_name.get(collection)
                if index is None:
                    index = self._by_name[collection] = {}
                    for k, v in pairs:
                        index.setdefault(k.lower(), []).append((k, v))
                cached = list(index.get(selector.lower(), ()))
            self._selected[id(var)] = (var, cached)
            return cached
        if var.selector is None:
            return pairs
        if var.is_regex:
            prefix = _literal_prefix(var.selector)
            if prefix is not None:  # `TX:/^HEADER_NAME_/` (920450): a prefix test, not a search per key
                size = len(prefix)
                return [(k, v) for k, v in pairs if k[:size].lower() == prefix]
            search = _selector_regex(var.selector).search
            return [(k, v) for k, v in pairs if search(k) is not None]
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
        parts = _template(text)
        if len(parts) == 1 and not parts[0][0] and parts[0][1]:  # `%{tx.restricted_headers}`: one lookup
            return self._macro(parts[0][1], parts[0][2])
        return "".join(literal + (self._macro(collection, key) if collection else "")
                       for literal, collection, key in parts)

    def _macro(self, collection: str, key: str | None) -> str:
        if collection == "TX" and key is not None:
            return self.tx.get(key, "")
        if key is None:
            return self._scalar(collection) or ""
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


_CAPTURES = tuple(str(i) for i in range(10))  # TX:0-9
_NO_GROUPS: tuple[str, ...] = ("",)  # a match whose groups no one reads (the rule has no `capture`)
_STATEFUL = frozenset({"TX", "MATCHED_VARS", "MATCHED_VARS_NAMES"})  # selected anew on every call (`_select`)


@lru_cache(maxsize=4096)
def _template(text: str) -> tuple[tuple[str, str, str | None], ...]:
    """A text with macros as (literal before, COLLECTION, key) parts; the last part may be a bare literal
    (collection ''). TX keys are lower-cased here once. From rule files (a fixed set per config): an LRU."""
    parts: list[tuple[str, str, str | None]] = []
    end = 0
    for m in MACRO.finditer(text):
        collection, key = m.group(1).upper(), m.group(2)
        parts.append((text[end:m.start()], collection, key.lower() if key is not None and collection == "TX"
                      else key))
        end = m.end()
    if end < len(text):
        parts.append((text[end:], "", None))
    return tuple(parts)


def _key_selected(var: VarSpec, key: str) -> bool:
    selector = var.selector
    if selector is None:
        return True
    if selector[0] == "/" and selector[-1] == "/" and len(selector) >= 2:
        return _selector_regex(selector).search(key) is not None
    return key.lower() == selector.lower()


_PREFIX = re.compile(r"/\^([a-hj-rt-z0-9_]+)/")


@lru_cache(maxsize=4096)
def _literal_prefix(selector: str) -> str | None:
    """`/^header_name_/` as `header_name_`: a case-insensitive search anchored at the start for a literal.
    `k[:n].lower() == prefix` decides as the IGNORECASE search does only for letters whose case has no
    special Unicode partners in Python's `re` (`i`: U+0130/U+0131, `s`: U+017F; those selectors keep the search)."""
    m = _PREFIX.fullmatch(selector.lower())
    return m.group(1) if m else None


@lru_cache(maxsize=4096)
def _selector_regex(selector: str) -> re.Pattern[str]:
    """`/regex/` key selectors: from rule files and exceptions (a fixed set per config), compiled once (LRU)."""
    return re.compile(selector[1:-1], re.IGNORECASE)


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
