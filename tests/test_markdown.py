"""Markdown report for job summaries: tables that cannot be broken by finding text."""

from __future__ import annotations

from mlscan.model import Confidence, Finding, Report, Severity, Summary
from mlscan.reporters import markdown


def _f(i: int = 0, message: str = "calls posix.system", severity: Severity = Severity.CRITICAL,
       **kw: object) -> Finding:
    return Finding(rule_id="MLS201", rule="pickle-dangerous-global", severity=severity,
                   confidence=Confidence.HIGH, path=f"m{i}.pt", message=message,
                   **kw)  # type: ignore[arg-type]


def test_clean_report_says_so() -> None:
    text = markdown.render(Report(summary=Summary(files=3)))
    assert text.startswith("## ✅ mlscan: 0 findings")
    assert "Scanned 3 files" in text and "| Severity" not in text


def test_findings_table_is_sorted_and_escaped() -> None:
    low = _f(1, "low one", Severity.LOW)
    evil = _f(2, "a | b\nnext `code` <script>", member="archive/data.pkl")
    text = markdown.render(Report(findings=(low, evil)))
    rows = [line for line in text.splitlines() if line.startswith("| ")][2:]
    assert "critical" in rows[0] and "low" in rows[1]
    assert "a \\| b next 'code' &lt;script>" in rows[0]
    assert "`m2.pt ! archive/data.pkl`" in rows[0]
    assert all(row.count(" | ") == 3 for row in rows)


def test_suppressed_are_listed_with_reason_and_table_is_capped() -> None:
    many = tuple(_f(i) for i in range(markdown.MAX_ROWS + 5))
    text = markdown.render(Report(findings=many, suppressed=(_f(999),),
                                  suppressions=("baseline",)))
    assert "and 5 more" in text
    assert "Suppressed findings (1)" in text and "| baseline |" in text
    assert "1 suppressed" in text
