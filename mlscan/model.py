"""The data model every part of mlscan speaks: rules, findings, reports (frozen dataclasses)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from dataclasses import dataclass, field


class Severity(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown severity {text!r} (choose from {choices})") from None


_SEVERITY_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class Confidence(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class RuleDoc:
    """The fixed sections of every rule's documentation (rendered by `mlscan rules CODE`)."""

    what: str
    why: str
    example: str = ""
    use_instead: str = ""
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One rule: a stable code (`MLS201`), a kebab-case name and its defaults."""

    code: str
    name: str
    severity: Severity
    confidence: Confidence
    summary: str
    """One line, shown in `mlscan rules` and as SARIF shortDescription."""
    doc: RuleDoc
    cwe: int | None = None
    tags: tuple[str, ...] = ("security",)

    def finding(
        self,
        path: str,
        message: str,
        *,
        evidence: str = "",
        member: str | None = None,
        line: int | None = None,
        column: int | None = None,
        offset: int | None = None,
        severity: Severity | None = None,
        confidence: Confidence | None = None,
    ) -> Finding:
        """Build a finding of this rule; severity/confidence default to the rule's."""
        return Finding(
            rule_id=self.code,
            rule=self.name,
            severity=severity or self.severity,
            confidence=confidence or self.confidence,
            path=path,
            message=message,
            evidence=evidence,
            member=member,
            line=line,
            column=column,
            offset=offset,
        )


@dataclass(frozen=True)
class Finding:
    """One problem at one place. `path` is relative to the scan root when it lies under it."""

    rule_id: str
    rule: str
    severity: Severity
    confidence: Confidence
    path: str
    message: str
    evidence: str = ""
    """The exact thing that fired: a qualified name, a source line, a byte pattern."""
    member: str | None = None
    """Entry inside an archive; nested entries are joined with '!'."""
    line: int | None = None
    column: int | None = None
    offset: int | None = None
    """Byte offset in the (innermost) stream for binary artifacts."""

    @property
    def fingerprint(self) -> str:
        """Stable identity that survives code moving: no line numbers, no offsets."""
        key = "\x1f".join((self.rule_id, self.path, self.member or "", self.evidence))
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    def sort_key(self) -> tuple[str, str, int, int, int, str]:
        return (
            self.path,
            self.member or "",
            self.line or 0,
            self.offset or 0,
            -self.severity.rank,
            self.rule_id,
        )

    def with_path(self, path: str) -> Finding:
        return dataclasses.replace(self, path=path)

    def to_fields(self) -> dict[str, object]:
        return {
            "rule_id": self.rule_id,
            "rule": self.rule,
            "severity": self.severity,
            "confidence": self.confidence,
            "path": self.path,
            "message": self.message,
            "evidence": self.evidence,
            "member": self.member,
            "line": self.line,
            "column": self.column,
            "offset": self.offset,
        }


@dataclass(frozen=True)
class ScanError:
    """A tool failure that is not about the scanned content (bad flag, unreadable config)."""

    path: str
    message: str


@dataclass(frozen=True)
class Summary:
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...] = ()
    suppressed: tuple[Finding, ...] = ()
    suppressions: tuple[str, ...] = ()
    """Why each entry of `suppressed` was suppressed (same order): 'inline', 'baseline',
    'allow-sha256' or 'per-file-ignores', optionally followed by ': detail'."""
    errors: tuple[ScanError, ...] = ()
    summary: Summary = field(default_factory=Summary)
    roots: tuple[str, ...] = ()
    """Scan roots as given (absolute), for reporters that need them (SARIF)."""
    folders: tuple[str, ...] = ()
    """Per-model-folder summary lines (formats, what loading runs, safest loader)."""

    def by_severity(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.severity.value] = counts.get(finding.severity.value, 0) + 1
        return counts

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=None)
