"""Measure one raw hold-out batch: markers stripped, full `mlscan scan`, medium+ on the line."""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from common import RANK, cleanup, cli_scan, stripped_copy

from common import HOLDOUT

batch = Path(sys.argv[1]) if Path(sys.argv[1]).is_dir() else HOLDOUT / sys.argv[1]
tmp, allmarks = stripped_copy(batch)
try:
    findings = cli_scan(tmp)
finally:
    cleanup(tmp)
at: dict[tuple[str, int], list[dict]] = defaultdict(list)
for f in findings:
    if RANK.get(f["severity"], 0) >= RANK["medium"]:
        at[(f["rel"], f["line"])].append(f)
hit = total = 0
fam_tot: dict[int, list[int]] = defaultdict(lambda: [0, 0])
for rel, marks in sorted(allmarks.items()):
    for line, (kind, fam) in sorted(marks.items()):
        got = at.get((rel, line), [])
        codes = ",".join(sorted({f["rule_id"] for f in got}))
        if kind == "SABOTAGE":
            total += 1
            fam_tot[fam][1] += 1
            if got:
                hit += 1
                fam_tot[fam][0] += 1
                print(f"HIT   fam{fam} {rel}:{line} {codes}")
            else:
                print(f"MISS  fam{fam} {rel}:{line}")
        elif got:
            print(f"FP    fam{fam} {rel}:{line} {codes}")
marked = {(rel, line) for rel, marks in allmarks.items() for line in marks}
for (rel, line), got in sorted(at.items()):
    if (rel, line) not in marked:
        print(f"EXTRA {rel}:{line} " + ",".join(sorted({f['rule_id'] for f in got})))
for fam in sorted(fam_tot):
    print(f"fam{fam}: {fam_tot[fam][0]}/{fam_tot[fam][1]}")
benign = sum(1 for m in allmarks.values() for k, _ in m.values() if k == "BENIGN")
print(f"recall: {hit}/{total} ({100 * hit / max(total, 1):.0f}%) benign lines: {benign}")
