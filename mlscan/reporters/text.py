"""Human-readable report, grouped by file, worst first within a file; ANSI colour on a TTY."""

from __future__ import annotations

from itertools import groupby

from mlscan.model import Finding, Report, Severity

_COLORS = {
    Severity.CRITICAL: "\x1b[1;31m",
    Severity.HIGH: "\x1b[31m",
    Severity.MEDIUM: "\x1b[33m",
    Severity.LOW: "\x1b[36m",
}
_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"


def _where(f: Finding) -> str:
    parts = []
    if f.member:
        parts.append(f.member)
    if f.line is not None:
        parts.append(f"line {f.line}" + (f":{f.column}" if f.column else ""))
    elif f.offset is not None:
        parts.append(f"offset {f.offset}")
    return ", ".join(parts)


def render(report: Report, color: bool = False) -> str:
    def c(code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    lines: list[str] = []
    for path, group in groupby(report.findings, key=lambda f: f.path):
        items = sorted(group, key=lambda f: (f.member or "", f.line or 0, -f.severity.rank))
        lines.append(c(_BOLD, path))
        for f in items:
            sev = c(_COLORS[f.severity], f"{f.severity.value.upper():8}")
            where = _where(f)
            lines.append(f"  {sev} {f.rule_id} {f.rule}" + (c(_DIM, f"  [{where}]") if where
                                                              else ""))
            lines.append(f"           {f.message}")
            if f.evidence and f.evidence not in f.message:
                lines.append(c(_DIM, f"           evidence: {f.evidence}"))
        lines.append("")
    if report.folders:
        lines.extend(report.folders)
        lines.append("")
    for err in report.errors:
        lines.append(c(_COLORS[Severity.HIGH], f"error: {err.path}: {err.message}"))
    s = report.summary
    counts = report.by_severity()
    tally = ", ".join(f"{counts[sev.value]} {sev.value}" for sev in reversed(Severity)
                      if sev.value in counts)
    total = len(report.findings)
    headline = f"{total} finding{'s' if total != 1 else ''}" + (f" ({tally})" if tally else "")
    if report.suppressed:
        headline += f", {len(report.suppressed)} suppressed"
    mb = s.bytes / (1024 * 1024)
    lines.append(f"{headline} in {s.files} file{'s' if s.files != 1 else ''} "
                 f"({mb:.1f} MiB) in {s.seconds:.2f}s")
    return "\n".join(lines) + "\n"
