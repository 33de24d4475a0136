"""Keep a raw hold-out batch as line-annotated examples in the repo.

python3 convert.py bN "Hold-out batch N (...). Measured once in session S (round R): X/Y (Z%) at medium+."
Writes tests/examples/python/holdout_bN/ of this repository.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

from common import FAMILY_OK, HOLDOUT, PYTHON, RANK, REPO, cli_scan, markers, raw_files

name, header = sys.argv[1], sys.argv[2]
batch = HOLDOUT / name
dest = REPO / "tests/examples/python" / f"holdout_{name}"
dest.mkdir(parents=True, exist_ok=False)
allmarks = {}
for p in raw_files(batch):
    rel = p.relative_to(batch).as_posix()
    lines, marks = markers(p.read_text(errors="replace"))
    out = dest / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(["# ruff: noqa", f"# {header}", *lines]) + "\n")
    allmarks[rel] = {line + 2: mark for line, mark in marks.items()}

# Python-check findings at every severity, exactly as the line-exact test computes them.
code = (
    "import json,sys\nfrom pathlib import Path\nfrom mlscan.analyzers.python_code import analyze_text\n"
    "root=Path(sys.argv[1]);out=[]\n"
    "for p in sorted(root.rglob('*.py')):\n"
    "    for f in analyze_text(p.read_text(), str(p)):\n"
    "        out.append([p.relative_to(root).as_posix(), f.line, f.rule_id, f.severity.value])\n"
    "print(json.dumps(out))\n"
)

py = json.loads(subprocess.run([PYTHON, "-c", code, str(dest)], check=True,
                               capture_output=True, text=True, cwd=REPO).stdout)
py_at: dict[tuple[str, int], set[str]] = defaultdict(set)
py_med: dict[tuple[str, int], set[str]] = defaultdict(set)
for rel, line, rule, sev in py:
    py_at[(rel, line)].add(rule)
    if RANK[sev] >= RANK["medium"]:
        py_med[(rel, line)].add(rule)
cli_med: dict[tuple[str, int], set[str]] = defaultdict(set)
for f in cli_scan(dest):
    if RANK.get(f["severity"], 0) >= RANK["medium"]:
        cli_med[(f["rel"], f["line"])].add(f["rule_id"])


def ids(codes: set[str]) -> str:
    return ", ".join(sorted(codes))


for path in sorted(dest.rglob("*.py")):
    rel = path.relative_to(dest).as_posix()
    marks = allmarks.get(rel, {})
    lines = path.read_text().splitlines()
    for i, text in enumerate(lines, start=1):
        key = (rel, i)
        p, pm = py_at.get(key, set()), py_med.get(key, set())
        sem = cli_med.get(key, set()) - p
        mark = marks.get(i)
        tail = ""
        if mark and mark[0] == "SABOTAGE":
            fam = mark[1]
            if pm:
                tail = f"# ruleid: {ids(p)}"
            elif sem:
                tail = f"# sabotage: {ids(sem)} (semgrep rules)" + (f"  # ruleid: {ids(p)}" if p else "")
            else:
                tail = f"# todoruleid: family {fam} (missed)" + (f"  # ruleid: {ids(p)}" if p else "")
        elif mark:
            fam = mark[1]
            if p:
                note = "benign look-alike FLAGGED" if (pm or sem) else "benign look-alike, low"
                tail = f"# ruleid: {ids(p)}  ({note})"
                print(f"BENIGN-FLAGGED {rel}:{i} {ids(p)} med={ids(pm | sem)}")
            else:
                ok = [c for c in FAMILY_OK[fam].split(", ")]
                tail = f"# ok: {', '.join(ok)}"
                if sem:
                    print(f"BENIGN-SEMGREP {rel}:{i} {ids(sem)}")
        elif p:
            tail = f"# ruleid: {ids(p)}"
            print(f"EXTRA {rel}:{i} {ids(p)} med={ids(pm)} | {text.strip()[:100]}")
        elif sem:
            print(f"EXTRA-SEMGREP {rel}:{i} {ids(sem)} | {text.strip()[:100]}")
        if tail:
            lines[i - 1] = f"{text}  {tail}"
    path.write_text("\n".join(lines) + "\n")
print("wrote", dest)
