"""Suppressions, applied after analysis: inline `# mlscan: ignore[MLS301]` comments, per-file
ignores and sha256 allowlist from the config, and a baseline of accepted fingerprints.

Nothing disappears: every suppressed finding is returned with the reason, and malformed or
unused inline comments become findings themselves (MLS905, MLS906).
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlscan import registry
from mlscan.baseline import Baseline
from mlscan.discover import is_excluded
from mlscan.model import Finding
from mlscan.rulesets.suppressions import BARE_IGNORE, UNUSED_IGNORE

# Why a finding was suppressed; SARIF maps INLINE to "inSource", the rest to "external".
INLINE, PER_FILE, SHA256, BASELINE = "inline", "per-file-ignores", "allow-sha256", "baseline"

_DIRECTIVE = re.compile(r"#\s*mlscan\s*:\s*ignore\b(?P<bracket>\[(?P<codes>[^\]]*)\])?"
                        r"(?P<rest>[^#]*)", re.IGNORECASE)
_CODE = re.compile(r"MLS\d{3}\Z")


@dataclass(frozen=True)
class SuppressOptions:
    inline: bool = True
    """False for audits of code you do not trust: its author could have written the comments."""
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(glob relative to the display-path base, rule selectors)."""
    allow_sha256: frozenset[str] = frozenset()
    baseline: Baseline | None = None


@dataclass
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    suppressed: list[tuple[Finding, str]] = field(default_factory=list)
    """(finding, reason) where reason is one of the kinds above, optionally ': detail'."""


@dataclass
class _Directive:
    line: int
    standalone: bool
    """The comment is alone on its line: it applies to the next line too."""
    codes: tuple[str, ...]
    justification: str
    used: set[str] = field(default_factory=set)


def parse_directives(path: str, data: bytes) -> tuple[list[_Directive], list[Finding]]:
    """Inline directives in Python source, plus MLS905 findings for malformed ones."""
    directives: list[_Directive] = []
    problems: list[Finding] = []
    for line, standalone, comment in _comments(data):
        for m in _DIRECTIVE.finditer(comment):
            raw = m.group("codes")
            codes = [c.strip().upper() for c in (raw or "").split(",") if c.strip()]
            bad = [c for c in codes if not _CODE.match(c)]
            if m.group("bracket") is None or not codes or bad:
                why = (f"malformed rule code {bad[0]!r}" if bad
                       else "names no rule code; write # mlscan: ignore[MLS...]")
                problems.append(BARE_IGNORE.finding(
                    path, f"suppression comment {why}", line=line, evidence=m.group(0).strip()))
            good = tuple(c for c in codes if _CODE.match(c))
            if good:
                directives.append(_Directive(line, standalone, good, m.group("rest").strip()))
    return directives, problems


def _comments(data: bytes) -> Iterable[tuple[int, bool, str]]:
    """(line, alone on its line, text) for each comment; tokenize so strings never count."""
    try:
        found = [(tok.start[0], not tok.line[: tok.start[1]].strip(), tok.string)
                 for tok in tokenize.tokenize(io.BytesIO(data).readline)
                 if tok.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
        pass  # unparseable file: fall back to a line scan (may over-match inside strings)
    else:
        yield from found
        return
    text = data.decode("utf-8", "replace")
    for i, line in enumerate(text.splitlines(), start=1):
        pos = line.find("#")
        if pos >= 0 and "mlscan" in line[pos:].lower():
            yield i, not line[:pos].strip(), line[pos:]


def _apply_inline(findings: list[Finding], sources: Mapping[str, Path],
                  out: Outcome) -> list[Finding]:
    by_file: dict[str, dict[int, list[_Directive]]] = {}
    remaining: list[Finding] = []
    all_directives: list[tuple[str, _Directive]] = []
    for display, fs_path in sources.items():
        try:
            data = fs_path.read_bytes()
        except OSError:
            continue  # the analyzer already reported the unreadable file
        if b"mlscan" not in data.lower():
            continue
        directives, problems = parse_directives(display, data)
        remaining.extend(problems)
        index: dict[int, list[_Directive]] = {}
        for d in directives:
            index.setdefault(d.line, []).append(d)
            if d.standalone:
                index.setdefault(d.line + 1, []).append(d)
            all_directives.append((display, d))
        by_file[display] = index
    for f in findings:
        match = None
        if f.line is not None and f.path in by_file:
            for d in by_file[f.path].get(f.line, ()):
                if f.rule_id in d.codes:
                    match = d
                    break
        if match is None:
            remaining.append(f)
            continue
        match.used.add(f.rule_id)
        why = INLINE + (f": {match.justification}" if match.justification else "")
        out.suppressed.append((f, why))
    known = registry.all_rules()
    for display, d in all_directives:
        for code in d.codes:
            if code in d.used:
                continue
            why = "names an unknown rule" if code not in known else "matched no finding"
            remaining.append(UNUSED_IGNORE.finding(
                display, f"suppression of {code} {why}; remove it", line=d.line,
                evidence=f"ignore[{code}]"))
    return remaining


def apply_suppressions(findings: Iterable[Finding], opts: SuppressOptions, *,
          sources: Mapping[str, Path] | None = None,
          sha256_of: Callable[[str], str | None] | None = None) -> Outcome:
    """Split findings into kept and suppressed. `sources` maps display path -> file for Python
    files (inline comments); `sha256_of(display path)` hashes a scanned file on demand."""
    out = Outcome()
    pending = list(findings)
    if opts.inline and sources:
        pending = _apply_inline(pending, sources, out)
    budget = opts.baseline.counts() if opts.baseline is not None else None
    hashes: dict[str, str | None] = {}
    for f in pending:
        why = _external(f, opts, hashes, sha256_of)
        if why is None and budget is not None and opts.baseline is not None:
            key = opts.baseline.key(f)
            if budget.get(key, 0) > 0:
                budget[key] -= 1
                why = BASELINE
        if why is None:
            out.findings.append(f)
        else:
            out.suppressed.append((f, why))
    return out


def _external(f: Finding, opts: SuppressOptions, hashes: dict[str, str | None],
              sha256_of: Callable[[str], str | None] | None) -> str | None:
    for glob, selectors in opts.per_file_ignores:
        if registry.matches(f.rule_id, selectors) and is_excluded(f.path, (glob,)):
            return f"{PER_FILE}: {glob}"
    if opts.allow_sha256 and sha256_of is not None:
        if f.path not in hashes:
            hashes[f.path] = sha256_of(f.path)
        digest = hashes[f.path]
        if digest is not None and digest in opts.allow_sha256:
            return f"{SHA256}: {digest}"
    return None
