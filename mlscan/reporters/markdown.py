"""Markdown for GitHub job summaries and PR comments: a headline, counts, a findings table.

Job summaries are limited to 1 MiB per step, so the table stops after MAX_ROWS findings
(most severe first) and says how many more there are.
"""

from __future__ import annotations

from mlscan import __version__
from mlscan.model import Finding, Report, Severity

MAX_ROWS = 200
_ICON = {Severity.CRITICAL: "🔴", Severity.HIGH: "🟠", Severity.MEDIUM: "🟡", Severity.LOW: "🔵"}


def _cell(text: str, limit: int = 160) -> str:
    """One table cell: no pipes, newlines or backticks breaking the table; bounded length."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("<", "&lt;")


def _where(f: Finding) -> str:
    where = f.path + (f":{f.line}" if f.line else "")
    if f.member:
        where += f" ! {f.member}"
    return f"`{_cell(where, 120)}`"


def _table(findings: list[Finding], with_reason: list[str] | None = None) -> list[str]:
    head = "| Severity | Rule | Location | Message |"
    sep = "| --- | --- | --- | --- |"
    if with_reason is not None:
        head, sep = head + " Reason |", sep + " --- |"
    lines = [head, sep]
    for i, f in enumerate(findings[:MAX_ROWS]):
        row = (f"| {_ICON[f.severity]} {f.severity.value} | {f.rule_id} {f.rule} | "
               f"{_where(f)} | {_cell(f.message)} |")
        if with_reason is not None:
            row += f" {_cell(with_reason[i])} |"
        lines.append(row)
    if len(findings) > MAX_ROWS:
        lines.append("")
        lines.append(f"…and {len(findings) - MAX_ROWS} more (see the SARIF or JSON report).")
    return lines


def render(report: Report) -> str:
    counts = report.by_severity()
    total = len(report.findings)
    s = report.summary
    worst = report.worst()
    icon = _ICON[worst] if worst else "✅"
    lines = [f"## {icon} mlscan: {total} finding{'s' if total != 1 else ''}", ""]
    if counts:
        lines.append(" · ".join(f"{_ICON[sev]} {counts[sev.value]} {sev.value}"
                                for sev in reversed(Severity) if sev.value in counts))
        lines.append("")
    lines.append(f"Scanned {s.files} file{'s' if s.files != 1 else ''} "
                 f"({s.bytes / (1024 * 1024):.1f} MiB) in {s.seconds:.2f}s with mlscan "
                 f"{__version__}. {len(report.suppressed)} suppressed.")
    if report.errors:
        lines += ["", "### Errors", ""]
        lines += [f"- `{_cell(e.path, 120)}`: {_cell(e.message, 400)}" for e in report.errors]
    if report.findings:
        ordered = sorted(report.findings, key=lambda f: (-f.severity.rank, f.sort_key()))
        lines += ["", "### Findings", "", *_table(ordered)]
    if report.suppressed:
        reasons = list(report.suppressions) or ["suppressed"] * len(report.suppressed)
        lines += ["", "<details><summary>Suppressed findings "
                  f"({len(report.suppressed)})</summary>", "",
                  *_table(list(report.suppressed), reasons), "", "</details>"]
    return "\n".join(lines) + "\n"
