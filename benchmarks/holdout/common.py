"""Shared helpers for the hold-out tooling (kept outside the repo)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MARK = re.compile(r"\s*#\s*(SABOTAGE|BENIGN)\s*(?:fam(?:ily)?\s*)?(\d+)\b.*$")
RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_BESIDE = Path(sys.executable).parent / "mlscan"
MLSCAN = os.environ.get("MLSCAN", str(_BESIDE) if _BESIDE.exists() else shutil.which("mlscan") or "mlscan")
REPO = Path(__file__).resolve().parents[2]
HOLDOUT = Path(os.environ.get("HOLDOUT_DIR", "/work/holdout"))
"""Raw batches live outside the repo (writers must not see the code; kept copies are converted)."""
PYTHON = os.environ.get("PYTHON", sys.executable)
FAMILY_OK = {
    1: "MLS301", 2: "MLS302, MLS303, MLS304, MLS305", 3: "MLS307", 4: "MLS308", 5: "MLS306",
    6: "MLS309", 7: "MLS422", 8: "MLS401, MLS402, MLS403", 9: "MLS410, MLS411, MLS412, MLS413",
    10: "MLS101, MLS102, MLS103, MLS104, MLS105, MLS106",
}


def raw_files(batch: Path) -> list[Path]:
    return sorted(p for p in batch.rglob("*.py") if "__pycache__" not in p.parts)


def markers(text: str) -> tuple[list[str], dict[int, tuple[str, int]]]:
    """Lines with markers stripped, and {line: (kind, family)}."""
    out, marks = [], {}
    for i, line in enumerate(text.splitlines(), start=1):
        m = MARK.search(line)
        if m:
            marks[i] = (m.group(1), int(m.group(2)))
            line = line[: m.start()]
        out.append(line)
    return out, marks


def cli_scan(root: Path) -> list[dict]:
    # PYTHONPATH: the code of this checkout, not whatever an editable install points at (a
    # worktree of HEAD must measure HEAD, not the main checkout's uncommitted fixes).
    env = dict(os.environ, SEMGREP_ENABLE_VERSION_CHECK="0", SEMGREP_SEND_METRICS="off",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([MLSCAN, "scan", ".", "--format", "json", "--no-cache",
                           "--isolated", "--exit-zero", "--jobs", "1"],
                          capture_output=True, text=True, env=env, timeout=900, cwd=root)
    doc = json.loads(proc.stdout)
    for e in doc["errors"]:
        print("ERROR", e)
    for f in doc["findings"]:
        f["rel"] = Path(f["path"]).as_posix().removeprefix("./")
    return doc["findings"]


def stripped_copy(batch: Path) -> tuple[Path, dict[str, dict[int, tuple[str, int]]]]:
    tmp = Path(tempfile.mkdtemp(prefix="holdout_"))
    allmarks = {}
    for p in raw_files(batch):
        rel = p.relative_to(batch).as_posix()
        lines, marks = markers(p.read_text(errors="replace"))
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("\n".join(lines) + "\n")
        allmarks[rel] = marks
    return tmp, allmarks


def cleanup(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
