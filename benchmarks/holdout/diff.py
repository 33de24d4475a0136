"""Compare the analyzer with the example annotations.

Prints EXTRA (finding on a line without its ruleid), MISS (ruleid without a finding) and
PROMOTE (a todoruleid line now caught at medium+). `--add CODES` appends ruleid annotations for
EXTRA findings of those codes. Pipe into promote.py to turn PROMOTE lines into ruleid.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mlscan.analyzers.python_code import analyze_text  # noqa: E402

EX = Path(__file__).resolve().parents[2] / "tests/examples/python"
ANNOTATION = re.compile(r"#\s*(ruleid|ok):\s*(MLS\d{3}(?:\s*,\s*MLS\d{3})*)")
add = set(sys.argv[sys.argv.index("--add") + 1].split(",")) if "--add" in sys.argv else set()
only = [a for a in sys.argv[1:] if a.startswith("holdout") or a.endswith(".py")]
files = sorted(EX.rglob("*.py"))
if only:
    files = [p for p in files if any(p.relative_to(EX).as_posix().startswith(o) for o in only)]
rank = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
for path in files:
    rel = path.relative_to(EX).as_posix()
    lines = path.read_text().splitlines()
    expected, oks = set(), set()
    todo = {}
    for n, line in enumerate(lines, start=1):
        m = ANNOTATION.search(line)
        target = n if line.split("#", 1)[0].strip() else n + 1
        if m:
            for c in re.split(r"\s*,\s*", m.group(2)):
                (expected if m.group(1) == "ruleid" else oks).add((c, target))
        if "# todoruleid: family" in line:
            todo[n] = line
    got, sev = set(), defaultdict(int)
    for f in analyze_text(path.read_text(), str(path)):
        got.add((f.rule_id, f.line))
        sev[f.line] = max(sev[f.line], rank[f.severity.value])
    changed = False
    for line in sorted(todo):
        if sev[line] >= 2:
            codes = ", ".join(sorted({c for c, ln in got if ln == line}))
            print(f"PROMOTE {rel}:{line} {codes} | {lines[line - 1].strip()[:110]}")
    for code, line in sorted(got - expected):
        src = lines[line - 1].strip()[:110]
        tag = "OKFP " if (code, line) in oks else ""
        if line in todo and sev[line] >= 2:
            continue
        print(f"EXTRA {tag}{rel}:{line} {code} sev={sev[line]} | {src}")
        if code in add and not tag:
            text = lines[line - 1]
            m = ANNOTATION.search(text)
            if m and m.group(1) == "ruleid":
                text = text[: m.end()] + f", {code}" + text[m.end():]
            else:
                text = f"{text}  # ruleid: {code}"
            lines[line - 1] = text
            changed = True
    for code, line in sorted(expected - got):
        print(f"MISS {rel}:{line} {code} | {lines[line - 1].strip()[:110] if line <= len(lines) else ''}")
    if changed:
        path.write_text("\n".join(lines) + "\n")
