"""Notebook code cells as one Python file for semgrep, with the way back to cells and lines.

All code cells go into one file (imports and variables carry over between cells, as in the
kernel). Shell escapes are kept as the commands they are: `!curl ... | sh`, `%system ...`
and the lines of `%%bash`/`%%sh` cells become `os.system("...")` on the same line, so the
rules that look at shell commands see them. Other magics become blank lines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from mlscan.model import Finding

_SHELL_LINE = re.compile(r"^(\s*)(?:!|%(?:system|sx)\b)(.*)$")
_SHELL_CELL = re.compile(r"^\s*%%(?:bash|sh|system|script\s+(?:ba)?sh)\b")


@dataclass(frozen=True)
class NotebookCode:
    text: str
    origin: tuple[tuple[int, int, str], ...]
    """Per line of `text`: (cell index, 1-based line in the cell, original line)."""

    def remap(self, finding: Finding) -> Finding:
        """Point a finding on `text` at its cell (`member="cell[N]"`) and line there."""
        if not finding.line or finding.line > len(self.origin):
            return finding
        cell, line, original = self.origin[finding.line - 1]
        member = f"cell[{cell}]" if finding.member is None else f"{finding.member}!cell[{cell}]"
        return replace(finding, member=member, line=line, evidence=original.strip()[:200])


def notebook_code(data: bytes) -> NotebookCode | None:
    """None when the notebook cannot be read (the Python analyzer reports that as MLS901)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    cells = doc.get("cells") if isinstance(doc, dict) else None
    if not isinstance(cells, list):
        return None
    lines: list[str] = []
    origin: list[tuple[int, int, str]] = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(s for s in source if isinstance(s, str))
        if not isinstance(source, str):
            continue
        cell_lines = source.split("\n")
        shell_cell = bool(cell_lines) and bool(_SHELL_CELL.match(cell_lines[0]))
        for number, line in enumerate(cell_lines, start=1):
            lines.append(_python_line(line, shell_cell and number > 1))
            origin.append((index, number, line))
        lines.append("")  # keep cells apart: a dangling block must not swallow the next one
        origin.append((index, len(cell_lines) + 1, ""))
    return NotebookCode("\n".join(lines) + "\n", tuple(origin))


def _python_line(line: str, in_shell_cell: bool) -> str:
    if in_shell_cell:
        return f"os.system({line.strip()!r})" if line.strip() else ""
    shell = _SHELL_LINE.match(line)
    if shell:
        return f"{shell.group(1)}os.system({shell.group(2).strip()!r})"
    return "" if line.lstrip().startswith("%") else line
