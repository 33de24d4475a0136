"""Chat templates (Jinja): server-side template injection patterns, judged on tokens.

Ordinary chat templates use messages, loops, conditions, `namespace(...)`, `raise_exception`
and filters; they never touch dunder/private attributes, build attribute names from pieces
or reach Python modules. Those are what we flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mlscan.analyzers.base import Source, register
from mlscan.analyzers.template_lex import Token, decode_string, tokens
from mlscan.context import Budget
from mlscan.errors import LimitExceeded
from mlscan.kinds import Kind
from mlscan.model import Finding, Rule, Severity
from mlscan.rulesets.hf_formats import TEMPLATE_INJECTION, TEMPLATE_SUSPICIOUS
from mlscan.rulesets.meta import LIMIT_EXCEEDED

# Attribute names that only serve to climb from an object to Python internals.
GADGET_NAMES = frozenset({
    "__class__", "__mro__", "__subclasses__", "__globals__", "__builtins__", "__import__",
    "__init__", "__base__", "__bases__", "__dict__", "__getattribute__", "__code__",
    "__reduce__", "__reduce_ex__", "__self__", "__func__", "__closure__", "__loader__",
    "__spec__", "__module__", "__getitem__", "__call__", "__new__", "__qualname__",
    "mro", "func_globals", "f_globals", "f_locals", "f_back", "gi_frame", "gi_code",
    "cr_frame", "tb_frame", "co_code", "popen", "system", "subprocess", "os", "builtins",
    "import_module", "eval", "exec", "execfile", "compile", "getoutput", "check_output",
    "check_call", "spawnv", "spawnl", "execv", "execl", "posix", "modules", "load_module",
    "_TemplateReference__context", "globals", "environ",
})
# Jinja globals whose own attributes lead to their module's globals.
GADGET_BASES = frozenset({"cycler", "joiner", "namespace", "lipsum"})
_INCLUDES = frozenset({"include", "import", "extends", "from"})
_DUNDER = re.compile(r"__[a-z][a-z0-9_]*__")  # Python dunders are lower case
_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|N\{|[0-7]{1,3})")
_IDENT = re.compile(r"^[A-Za-z_]\w*$")
MAX_ISSUES = 25
MAX_TEMPLATE = 2 << 20


@dataclass(frozen=True)
class Issue:
    rule: Rule
    severity: Severity
    message: str
    evidence: str
    line: int


def check_template(text: str) -> list[Issue]:
    """Every SSTI signal in one template's source, deduplicated by (rule, evidence)."""
    toks, error = tokens(text)
    issues: list[Issue] = []
    if error is not None:
        issues.append(Issue(TEMPLATE_SUSPICIOUS, Severity.MEDIUM,
                            f"template does not parse as Jinja ({error}); checked by tokens only",
                            "syntax-error", 1))
    _Judge(toks, issues).run()
    best: dict[tuple[str, str], Issue] = {}
    for issue in issues:
        key = (issue.rule.code, issue.evidence)
        old = best.get(key)
        if old is None or issue.severity.rank > old.severity.rank:
            best[key] = issue
    return sorted(best.values(), key=lambda x: (-x.severity.rank, x.line))[:MAX_ISSUES]


def _op(tok: Token | None, value: str) -> bool:
    return tok is not None and tok[1] == "operator" and tok[2] == value


class _Judge:
    def __init__(self, toks: list[Token], issues: list[Issue]) -> None:
        self.t = toks
        self.issues = issues

    def at(self, i: int) -> Token | None:
        return self.t[i] if 0 <= i < len(self.t) else None

    def add(self, rule: Rule, sev: Severity, line: int, message: str, evidence: str) -> None:
        self.issues.append(Issue(rule, sev, message, evidence[:200], line))

    def run(self) -> None:
        for i, (line, typ, value) in enumerate(self.t):
            if typ == "name":
                self.name(i, line, value)
            elif typ == "string":
                self.string(i, line, value)

    def chain(self, i: int) -> str:
        """The dotted access chain around token i, for evidence."""
        start = i
        while _op(self.at(start - 1), ".") and (tok := self.at(start - 2)) and tok[1] == "name":
            start -= 2
        end = i
        while _op(self.at(end + 1), ".") and (tok := self.at(end + 2)) and tok[1] == "name":
            end += 2
        return ".".join(tok[2] for tok in self.t[start:end + 1:2])

    def name(self, i: int, line: int, value: str) -> None:
        after_dot = _op(self.at(i - 1), ".")
        prev = self.at(i - 1)
        if after_dot and (value in GADGET_NAMES or _DUNDER.fullmatch(value)):
            self.add(TEMPLATE_INJECTION, Severity.CRITICAL, line,
                     f"template accesses attribute '{value}' (reaches Python internals)",
                     self.chain(i))
        elif after_dot and value.startswith("_"):
            self.add(TEMPLATE_INJECTION, Severity.HIGH, line,
                     f"template accesses private attribute '{value}'", self.chain(i))
        elif not after_dot and _DUNDER.fullmatch(value):
            sev = Severity.CRITICAL if value in GADGET_NAMES else Severity.MEDIUM
            rule = TEMPLATE_INJECTION if value in GADGET_NAMES else TEMPLATE_SUSPICIOUS
            self.add(rule, sev, line, f"template uses the dunder name '{value}'", value)
        if value in GADGET_BASES and not after_dot and _op(self.at(i + 1), "."):
            self.add(TEMPLATE_INJECTION, Severity.HIGH, line,
                     f"template reads attributes of the Jinja global '{value}' (gadget chain "
                     "towards module globals)", self.chain(i))
        if value == "attr" and _op(prev, "|"):
            self.attr_filter(i, line)
        if value in _INCLUDES and prev is not None and prev[1] == "block_begin":
            nxt = self.at(i + 1)
            self.add(TEMPLATE_SUSPICIOUS, Severity.MEDIUM, line,
                     f"template uses '{{% {value} %}}': chat templates never load other files",
                     f"{value} {nxt[2] if nxt else ''}".strip())

    def attr_filter(self, i: int, line: int) -> None:
        if not _op(self.at(i + 1), "("):
            return
        args: list[Token] = []
        j, depth = i + 2, 1
        while (tok := self.at(j)) is not None and j < i + 200:
            if tok[1] == "operator" and tok[2] in "([":
                depth += 1
            elif tok[1] == "operator" and tok[2] in ")]":
                depth -= 1
                if depth == 0:
                    break
            args.append(tok)
            j += 1
        text = " ".join(a[2] for a in args)
        if len(args) == 1 and args[0][1] == "string":
            name = decode_string(args[0][2])
            if name in GADGET_NAMES or name.startswith("_"):
                self.add(TEMPLATE_INJECTION, Severity.CRITICAL, line,
                         f"template uses |attr('{name}') to reach Python internals",
                         f"|attr({text})")
            else:
                self.add(TEMPLATE_SUSPICIOUS, Severity.MEDIUM, line,
                         f"template uses |attr('{name}'); chat templates use plain attribute "
                         "access", f"|attr({text})")
        else:
            self.add(TEMPLATE_INJECTION, Severity.CRITICAL, line,
                     "template uses |attr with a computed name (built to evade keyword "
                     "checks)", f"|attr({text})")

    def string(self, i: int, line: int, raw: str) -> None:
        value = decode_string(raw)
        if _ESCAPE.search(raw) and ("_" in value or _IDENT.match(value)) and value != raw[1:-1]:
            self.add(TEMPLATE_INJECTION, Severity.CRITICAL, line,
                     f"template spells a name with escape sequences ({raw} = '{value}')", raw)
        self.judge_value(line, value, raw, built=False)
        folded, pieces = self.fold(i)
        if pieces > 1:
            self.judge_value(line, folded, f"built: {folded!r}", built=True)

    def judge_value(self, line: int, value: str, evidence: str, built: bool) -> None:
        gadgets = [g for g in GADGET_NAMES if g.startswith("_") and g in value]
        how = "assembles" if built else "contains"
        if gadgets or (built and value in GADGET_NAMES):
            self.add(TEMPLATE_INJECTION, Severity.CRITICAL, line,
                     f"template {how} the string '{value[:60]}' (attribute name used for "
                     "sandbox escapes)", evidence)
        elif _DUNDER.search(value):
            self.add(TEMPLATE_SUSPICIOUS, Severity.MEDIUM, line,
                     f"template {how} a dunder string '{value[:60]}'", evidence)
        if built and "%c" in value:
            self.add(TEMPLATE_SUSPICIOUS, Severity.MEDIUM, line,
                     "template formats characters from numbers ('%c')", evidence)

    def fold(self, i: int) -> tuple[str, int]:
        """Constant-fold `'a' ~ 'b'`, `'a' + 'b'`, `'_' * 2`, `|reverse`, `|replace`,
        `['a','b']|join` starting at string token i."""
        tok = self.at(i)
        assert tok is not None
        value, pieces, j = decode_string(tok[2]), 1, i + 1
        if _op(self.at(i - 1), "[") or _op(self.at(i - 1), ","):
            joined = self.fold_join(i)
            if joined is not None:
                return joined
        while True:
            nxt, arg = self.at(j), self.at(j + 1)
            if nxt is None or arg is None:
                break
            if nxt[1] == "operator" and nxt[2] in ("~", "+") and arg[1] == "string":
                value += decode_string(arg[2])
                pieces, j = pieces + 1, j + 2
            elif _op(nxt, "*") and arg[1] == "integer":
                value = value * min(int(arg[2].replace("_", "")), 64)
                pieces, j = pieces + 1, j + 2
            elif _op(nxt, "|") and arg[1] == "name" and arg[2] == "reverse":
                value, pieces, j = value[::-1], pieces + 1, j + 2
            elif (_op(nxt, "|") and arg[2] == "replace" and _op(self.at(j + 2), "(")
                  and self.kind(j + 3) == "string" and _op(self.at(j + 4), ",")
                  and self.kind(j + 5) == "string" and _op(self.at(j + 6), ")")):
                old, new = decode_string(self.t[j + 3][2]), decode_string(self.t[j + 5][2])
                value = value.replace(old, new) if old else value
                pieces, j = pieces + 1, j + 7
            elif _op(nxt, "|") and arg[2] == "format":
                value, pieces, j = value, pieces + 1, j + 2
            else:
                break
        return value, pieces

    def kind(self, i: int) -> str:
        tok = self.at(i)
        return tok[1] if tok else ""

    def fold_join(self, i: int) -> tuple[str, int] | None:
        """['__cla', 'ss__']|join: only when i is the first string of the list."""
        if not _op(self.at(i - 1), "["):
            return None
        parts: list[str] = []
        j = i
        while self.kind(j) == "string":
            parts.append(decode_string(self.t[j][2]))
            if _op(self.at(j + 1), ","):
                j += 2
            elif _op(self.at(j + 1), "]"):
                if _op(self.at(j + 2), "|") and (tok := self.at(j + 3)) and tok[2] == "join":
                    return "".join(parts), max(2, len(parts))
                return None
            else:
                return None
        return None


def template_findings(text: str, src: Source, where: str) -> Iterator[Finding]:
    """Findings for one template found at `where` (e.g. 'chat_template' of a JSON file)."""
    if len(text) > MAX_TEMPLATE:  # real chat templates are a few KB; lexing MBs is slow
        yield LIMIT_EXCEEDED.finding(
            src.path, f"{where}: template of {len(text)} characters exceeds the "
            f"{MAX_TEMPLATE >> 20} MiB template limit; not checked", evidence="template-size",
            member=src.member)
        return
    for issue in check_template(text):
        yield issue.rule.finding(
            src.path, f"{where}: {issue.message} (template line {issue.line})",
            evidence=issue.evidence, member=src.member, severity=issue.severity,
            line=issue.line if where == "template" else None)


def read_text(src: Source, budget: Budget) -> str:
    """The whole artifact as text, bounded by max_text_bytes."""
    limit = budget.limits.max_text_bytes
    data = src.stream.read(limit + 1)
    if len(data) > limit:
        raise LimitExceeded(f"text file larger than {limit // (1024 * 1024)} MiB; not parsed")
    return data.decode("utf-8-sig", errors="replace")


@register(Kind.JINJA)
def analyze_jinja(src: Source, budget: Budget) -> Iterator[Finding]:
    yield from template_findings(read_text(src, budget), src, "template")
