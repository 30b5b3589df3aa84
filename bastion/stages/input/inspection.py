"""Injection inspection (negative model): decode the usual evasions, then score a value against the rules.

The rules are data (`rules.yaml` beside this module); this module only decodes, matches and adds up scores,
like the OWASP Core Rule Set's anomaly scoring: every matching rule adds its score to its category, and a
category that reaches the threshold makes the value an attack. One combined regex per inspector is tried first,
so a clean value (the common case) costs one regex search per decoded form.
"""

from __future__ import annotations

import html
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ruamel.yaml import YAML

try:
    import re2  # google-re2: all rules in one linear-time pass
except ImportError:  # pragma: no cover - the package is a dependency; the fallback keeps results identical
    re2 = None

RULES_FILE = Path(__file__).with_name("rules.yaml")
_FLAGS = re.IGNORECASE | re.DOTALL
_PCT_U = re.compile(r"%u([0-9a-fA-F]{4})")
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u\{?([0-9a-fA-F]{4,6})\}?|([0-7]{3}))")
_COMMENT = re.compile(r"/\*!?\d*|\*/")
_MACRO = re.compile(r"<<(\w+)>>")
_CONTROL = re.compile(r"[\t\n\r]")
_DOT_SEGMENTS = re.compile(r"(?:/\.)+/")
_SHELL_META = re.compile(r"[;|&`$]")
_SHELL_QUOTES = re.compile(r"['\"\\]")


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern of one attack category, active from `paranoia` upwards."""

    id: str
    category: str
    paranoia: int
    score: int
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class SsrfRules:
    schemes: frozenset[str]
    host_schemes: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    hostnames: frozenset[str]
    ip_dns: tuple[str, ...]
    bare_address_paranoia: int
    internal_suffixes: tuple[str, ...]
    internal_suffix_paranoia: int
    score: int


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    ssrf: SsrfRules


@dataclass(frozen=True, slots=True)
class Finding:
    """A value that scored as an attack: the category, its score and the rules that matched."""

    category: str
    score: int
    rules: tuple[str, ...]


@lru_cache(maxsize=4)
def load_rules(path: Path = RULES_FILE) -> RuleSet:
    """Parse and compile the rule file (once per process; prepare() calls it at config load)."""
    data: dict[str, Any] = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    macros = {k: str(v) for k, v in (data.get("macros") or {}).items()}
    rules = []
    for item in data["rules"]:
        source = _MACRO.sub(lambda m: macros[m.group(1)], str(item["pattern"]).strip())
        try:
            pattern = re.compile(source, _FLAGS)
        except re.error as exc:
            raise ValueError(f"{path}: rule {item['id']}: {exc}") from None
        rules.append(Rule(str(item["id"]), str(item["category"]), int(item["paranoia"]), int(item["score"]),
                          pattern))
    s = data["ssrf"]
    ssrf = SsrfRules(
        frozenset(s["schemes"]), frozenset(s["host_schemes"]),
        tuple(ipaddress.ip_network(n) for n in s["networks"]),
        frozenset(str(h).lower() for h in s["hostnames"]), tuple(s["ip_dns"]),
        int(s["bare_address_paranoia"]), tuple(s["internal_suffixes"]), int(s["internal_suffix_paranoia"]),
        int(s["score"]),
    )
    return RuleSet(tuple(rules), ssrf)


def decoded_forms(value: str) -> list[str]:
    """The value and what an upstream might turn it into: URL (repeatedly), %uXXXX, HTML entities, \\x and
    \\u escapes, Unicode compatibility forms (fullwidth U+FF1C for `<`), NUL removed, SQL comments as spaces."""
    forms = [value]
    current = value
    for _ in range(4):  # double and triple encoding
        step = current
        if "%" in step:
            step = _PCT_U.sub(lambda m: chr(int(m.group(1), 16)), step)
            step = unquote(step, errors="replace")
        if "&" in step:
            step = html.unescape(step)
        if "\\" in step:
            step = _ESCAPE.sub(_unescape, step)
        if step == current:
            break
        current = step
    if not current.isascii():
        current = unicodedata.normalize("NFKC", current)
    if "\x00" in current:
        forms.append(current)  # keep the NUL for the NUL-byte rules
        current = current.replace("\x00", "")
    if current != value:
        forms.append(current)
    if "/*" in current:
        forms.append(_COMMENT.sub(" ", current))
    if "+" in current and " " not in current:  # form encoding: `'+OR+1=1--`
        forms.append(current.replace("+", " "))
    if "\t" in current or "\n" in current or "\r" in current:  # browsers drop them inside URLs: jav&#9;ascript:
        forms.append(_CONTROL.sub("", current))
    if "/./" in current:
        forms.append(_DOT_SEGMENTS.sub("/", current))
    if _SHELL_META.search(current) and ("'" in current or '"' in current or "\\" in current):
        forms.append(_SHELL_QUOTES.sub("", current))  # w'h'o'am'i, c\at: the shell removes them
    return forms


def _unescape(match: re.Match[str]) -> str:
    hex2, uni, octal = match.groups()
    code = int(hex2, 16) if hex2 else int(uni, 16) if uni else int(octal, 8)
    return chr(code) if code <= 0x10FFFF else match.group(0)


class Inspector:
    """The rules of one paranoia level and set of categories, compiled for fast matching."""

    def __init__(self, ruleset: RuleSet, paranoia: int, categories: frozenset[str] | set[str],
                 threshold: int = 5) -> None:
        self.rules = tuple(r for r in ruleset.rules if r.paranoia <= paranoia and r.category in categories)
        self.threshold = threshold
        self.paranoia = paranoia
        self.ssrf = ruleset.ssrf if "ssrf" in categories else None
        self._set = _rule_set(self.rules)
        self._text_set = _text_set(self.rules)

    def clean_json(self, body: bytes, members: int) -> bool:
        """True when no string of this JSON text (key or value) can score: then `inspect` would return None
        for every one of them, and the per-value walk is skipped. A prefilter, exact by construction:

        - without a backslash, `%`, `&`, `+`, `/*`, `/./`, a NUL or a non-ASCII byte in the text (and not a
          quote together with a shell metacharacter), every string's decoded forms are the string alone and
          every string is verbatim in the text (no escapes);
        - with every `"` turned into a newline each string is a line of its own, and the rules, searched in
          multi-line mode (`^`/`$` at line ends), match that text wherever they match one of its lines; so no
          match in the text means no rule matches any string (other lines only add matches: the exact walk);
        - SSRF needs a colon inside a string (a URL), which there is not when the text's colons are exactly its
          `members` structural ones, or, from `bare_address_paranoia` up, a bare address, searched in the text
          (each string is a line, bounded by the whitespace the pattern accepts around an address).
        Anything else (a decoding to do, a rule or URL found) takes the exact per-value walk."""
        text_set = self._text_set
        if text_set is None or not body.isascii():
            return False
        # `find`, not `in`: bytes `in` first tries the needle as an integer and formats a TypeError (~2 K
        # instructions a search)
        for needle in _DECODING_TRIGGERS:
            if body.find(needle) >= 0:
                return False
        if body.find(b"'") >= 0 and (body.find(b";") >= 0 or body.find(b"|") >= 0 or body.find(b"`") >= 0
                                     or body.find(b"$") >= 0):
            return False  # a shell quote trick would add a decoded form
        text = body.translate(_QUOTES_TO_LINES)
        if text_set(text):
            return False
        ssrf = self.ssrf
        if ssrf is not None:
            if body.count(b":") != members:
                return False  # a colon inside a string (a URL?): the walk parses it
            if self.paranoia >= ssrf.bare_address_paranoia and _BARE.search(text.decode("ascii")):
                return False
        return True

    def inspect(self, value: str) -> Finding | None:
        """The strongest finding for one value, or None when it scores below the threshold everywhere."""
        if not value:
            return None
        forms = decoded_forms(value)
        scores: dict[str, int] = {}
        matched: dict[str, list[str]] = {}
        hits: set[int] = set()
        for form in forms:
            hits.update(self._set(form))
        for index in sorted(hits):
            rule = self.rules[index]
            scores[rule.category] = scores.get(rule.category, 0) + rule.score
            matched.setdefault(rule.category, []).append(rule.id)
        if self.ssrf is not None:
            for form in forms:
                rule_id = ssrf_target(form, self.ssrf, self.paranoia)
                if rule_id:
                    scores["ssrf"] = max(scores.get("ssrf", 0), self.ssrf.score)
                    matched["ssrf"] = [rule_id]
                    break
        if not scores:
            return None
        category = max(scores, key=lambda c: scores[c])
        if scores[category] < self.threshold:
            return None
        return Finding(category, scores[category], tuple(matched[category]))


def _rule_set(rules: tuple[Rule, ...]) -> Callable[[str], list[int]]:
    """A function returning the indices of the rules that match a string.

    With RE2 (google-re2) every rule runs in one linear-time pass (a DFA over the whole set), whatever the
    number of rules: ~1 µs for a short value instead of ~1 µs per rule and character with `re`. Without it,
    each rule is searched in turn (the same results, slower)."""
    if re2 is not None and rules:
        options = re2.Options()
        options.case_sensitive = False
        options.dot_nl = True
        rule_set = re2.Set.SearchSet(options)
        for rule in rules:
            rule_set.Add(rule.pattern.pattern)
        rule_set.Compile()
        match = rule_set.Match
        return lambda text: match(text) or []
    patterns = [rule.pattern.search for rule in rules]
    return lambda text: [i for i, search in enumerate(patterns) if search(text)]


_DECODING_TRIGGERS = (b"\\", b"%", b"&", b"+", b"/*", b"/./", b"\x00")
"""Bytes that may give a string a decoded form besides itself (`decoded_forms`), or a string that is not
verbatim in the JSON text (an escape). A raw tab or newline can only be whitespace between tokens: the JSON
parser refuses control characters inside strings."""
_QUOTES_TO_LINES = bytes.maketrans(b'"', b"\n")
_WHOLE_TEXT_ANCHORS = re.compile(r"\\[AzZ]")
_OTHER_LINE_BREAKS = re.compile(r"\n|\r|\\x0[aAdD]|\\0?1[25]|\\[cC][jJmM]")
_TEXT_SET_MEMORY = 64 << 20
_NEWLINE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\[nr]")


def _text_set(rules: tuple[Rule, ...]) -> Callable[[bytes], list[int]] | None:
    """The rules as one RE2 set in multi-line mode, for `Inspector.clean_json`.

    A rule's own `\\n`/`\\r` becomes `\\x01`: a string of that text holds neither (the parser refuses raw
    control characters and the text has no escapes), so those atoms never matched inside a string; in the
    text they would match the line breaks that stand for quotes (`id` after `[;|\\n]` is a command). No JSON
    text holds a raw `\\x01`. None without RE2, or when a rule anchors on the whole text (`\\A`, `\\z`) or
    names a line break another way: then the per-value walk always runs."""
    if re2 is None or not rules:
        return None
    sources = [rule.pattern.pattern for rule in rules]
    if any(_WHOLE_TEXT_ANCHORS.search(source) or _OTHER_LINE_BREAKS.search(source) for source in sources):
        return None
    options = re2.Options()
    options.case_sensitive = False
    options.dot_nl = True
    # the DFA over a whole body reaches many more states than over one short value: with RE2's default
    # budget (8 MiB) its cache fills and is rebuilt during a match (~1 M instructions per 1 KB body instead of
    # ~10 k); 64 MiB per inspector is bounded, and allocated only as states are reached
    options.max_mem = _TEXT_SET_MEMORY
    rule_set = re2.Set.SearchSet(options)
    for source in sources:
        rule_set.Add("(?m)" + _NEWLINE_ESCAPE.sub(r"\1\\x01", source))
    rule_set.Compile()
    match = rule_set.Match
    return lambda text: match(text) or []


# ---------------------------------------------------------------- SSRF targets

_URL = re.compile(r"([a-z][a-z0-9+.-]{1,15})\s*:\s*(?:/|\\){2}([^\s/\\?#\"'<>]*)", re.IGNORECASE)
_BARE = re.compile(r"(?:^|[\s=\"'(@,])(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\])(?::\d{1,5})?(?:[/?#\s]|$)",
                   re.IGNORECASE)
_SCHEME_ONLY = re.compile(r"\b([a-z][a-z0-9+.-]{1,15}):(?://|[a-z0-9_]+:)", re.IGNORECASE)


def ssrf_target(value: str, rules: SsrfRules, paranoia: int) -> str | None:
    """A rule id when `value` contains a URL aimed at an internal address or an internal-only scheme."""
    if ":" in value:
        for match in _SCHEME_ONLY.finditer(value):
            if match.group(1).lower() in rules.schemes:
                return "ssrf-internal-scheme"
        for match in _URL.finditer(value):
            scheme = match.group(1).lower()
            if scheme not in rules.host_schemes:
                continue
            host = _host(match.group(2))
            if scheme == "file" and host in ("", "localhost"):
                continue  # a local file is the traversal rules' business
            reason = _internal_host(host, rules, paranoia)
            if reason:
                return reason
    if paranoia >= rules.bare_address_paranoia and ("." in value or "[" in value):
        for match in _BARE.finditer(value):
            host = match.group(1).strip("[]")
            if "." not in host and ":" not in host:
                continue  # a plain number is not an address
            reason = _internal_host(host, rules, paranoia)
            if reason:
                return "ssrf-bare-address"
    return None


def _host(authority: str) -> str:
    authority = authority.rsplit("@", 1)[-1]  # http://trusted.example@127.0.0.1/ goes to 127.0.0.1
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0].lower()
    host = authority.split(":", 1)[0] if authority.count(":") <= 1 else authority
    return unquote(host).lower().rstrip(".")


def _internal_host(host: str, rules: SsrfRules, paranoia: int) -> str | None:
    if not host:
        return None
    address = _address(host)
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped or address.sixtofour
            if mapped is not None:
                address = mapped
        if any(address in net for net in rules.networks if net.version == address.version):
            return "ssrf-internal-address"
        return None
    if host in rules.hostnames or any(host.endswith("." + name) for name in rules.hostnames):
        return "ssrf-internal-hostname"
    for suffix in rules.ip_dns:
        if host.endswith("." + suffix):
            embedded = host[: -len(suffix) - 1]
            inner = _embedded_ip(embedded)
            if inner is not None and any(inner in n for n in rules.networks if n.version == inner.version):
                return "ssrf-ip-dns"
    if paranoia >= rules.internal_suffix_paranoia and host.endswith(rules.internal_suffixes):
        return "ssrf-internal-suffix"
    return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if host and (host[0].isdigit()) and all(c in "0123456789abcdefx." for c in host):
        try:  # inet_aton accepts what many HTTP clients do: 127.1, 0x7f.1, 0177.0.0.1, 2130706433
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`127.0.0.1`, `app.127.0.0.1` or `127-0-0-1` in front of a wildcard-DNS suffix."""
    for candidate in (".".join(text.split(".")[-4:]), ".".join(text.replace("-", ".").split(".")[-4:])):
        address = _address(candidate)
        if address is not None:
            return address
    return None
