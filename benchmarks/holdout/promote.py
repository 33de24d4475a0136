"""Read diff.py output on stdin; turn PROMOTE lines' todoruleid into ruleid with the codes found."""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

EX = Path(__file__).resolve().parents[2] / "tests/examples/python"
todo: dict[str, dict[int, str]] = defaultdict(dict)
for row in sys.stdin:
    m = re.match(r"PROMOTE (\S+):(\d+) ([^|]+)\|", row)
    if m:
        todo[m.group(1)][int(m.group(2))] = m.group(3).strip()
for rel, lines_codes in todo.items():
    path = EX / rel
    lines = path.read_text().splitlines()
    for n, codes in lines_codes.items():
        text = lines[n - 1]
        text = re.sub(r"#\s*todoruleid: family \d+ \(missed\)(\s*#\s*ruleid: [A-Z0-9, ]+)?",
                      f"# ruleid: {codes}", text)
        lines[n - 1] = text
        print("promoted", rel, n, codes)
    path.write_text("\n".join(lines) + "\n")
