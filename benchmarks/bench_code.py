"""Training-code analyzer vs bandit on the same files: speed, noise and sabotage recall.

    python benchmarks/bench_code.py [--bandit /work/benchvenv/bin/bandit] [--corpus DIR ...]

Corpora:
- benign: our realistic benign training scripts (tests/examples/python/benign_*.py) plus every
  --corpus folder (default: the installed torch package, a large body of benign ML code);
- sabotage: the annotated MLS3xx examples and the DDP script with a buried sabotage; a case is
  "caught" when the tool reports something at medium or above on the annotated line.
Prints lines/s (single process for both tools; mlscan also with one process per CPU) and
findings per 1,000 lines at medium or above, side by side. bandit is run from its own venv
(it is not a dependency of mlscan).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlscan.analyzers.python_code import analyze_text  # noqa: E402
from mlscan.errors import AnalysisStop  # noqa: E402
from mlscan.model import Finding, Severity  # noqa: E402

EXAMPLES = ROOT / "tests" / "examples" / "python"
SABOTAGE_FILES = ("seeding.py", "tampering.py", "hooks.py", "patching.py", "metrics.py",
                  "stalls.py", "poisoning.py", "ddp_sabotage.py", "holdout_sabotage.py",
                  "holdout_sabotage2.py", "holdout_sabotage3.py", "holdout_sabotage4.py",
                  "holdout_sabotage5.py", "holdout_sabotage6.py", "holdout_sabotage7.py",
                  *sorted(p.name for p in EXAMPLES.glob("holdout_[0-9]*.py")),
                  *sorted(p.relative_to(EXAMPLES).as_posix()
                          for p in EXAMPLES.glob("holdout_b*/*.py")))
MEDIUM = Severity.MEDIUM.rank


def _default_corpus() -> list[Path]:
    try:
        import torch
    except ImportError:
        return []
    return [Path(torch.__file__).parent]


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _mlscan_one(path: str) -> list[Finding]:
    text = _read(Path(path))
    if text is None:
        return []
    try:
        return analyze_text(text, path)
    except AnalysisStop:
        return []


def run_mlscan(files: list[Path], jobs: int) -> tuple[float, list[Finding]]:
    start = time.perf_counter()
    if jobs == 1:
        found = [f for p in files for f in _mlscan_one(str(p))]
    else:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs) as pool:
            found = [f for fs in pool.map(_mlscan_one, [str(p) for p in files], chunksize=16)
                     for f in fs]
    return time.perf_counter() - start, found


def run_bandit(bandit: str, files: list[Path]) -> tuple[float, list[dict[str, object]]]:
    """bandit -r over a folder of symlinks to exactly these files (one process, like ours)."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(files):
            os.symlink(path.resolve(), Path(tmp) / f"f{i:06d}.py")
        out = Path(tmp) / "bandit.json"
        start = time.perf_counter()
        subprocess.run([bandit, "-q", "-r", tmp, "-f", "json", "-o", str(out)],
                       check=False, capture_output=True)
        elapsed = time.perf_counter() - start
        data = json.loads(out.read_text()) if out.exists() else {"results": []}
    names = {f"f{i:06d}.py": str(p) for i, p in enumerate(files)}
    results = data.get("results", [])
    for r in results:
        r["filename"] = names.get(Path(str(r["filename"])).name, r["filename"])
    return elapsed, results


def _bandit_medium(results: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in results if r.get("issue_severity") in ("MEDIUM", "HIGH")]


def _lines(files: list[Path]) -> int:
    return sum((_read(p) or "").count("\n") for p in files)


def sabotage_cases() -> list[tuple[str, int, str]]:
    """(file, line, code) for every annotated MLS3xx hit in the sabotage examples."""
    cases = []
    pattern = re.compile(r"#\s*(?:todo)?ruleid:\s*(MLS3\d\d)")  # todoruleid: known misses
    for name in SABOTAGE_FILES:
        path = EXAMPLES / name
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            m = pattern.search(line)
            if m:
                target = number if line.split("#", 1)[0].strip() else number + 1
                cases.append((str(path), target, m.group(1)))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bandit", default=shutil.which("bandit") or "/work/benchvenv/bin/bandit")
    ap.add_argument("--corpus", type=Path, action="append", default=None)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--show", type=int, default=0, help="print N mlscan medium+ corpus findings")
    args = ap.parse_args()
    have_bandit = Path(args.bandit).exists()

    corpora = {"benign examples": sorted(EXAMPLES.glob("benign_*.py"))}
    for folder in args.corpus or _default_corpus():
        corpora[str(folder)] = _files([folder])

    print(f"{'corpus':<48}{'lines':>9} | {'mlscan l/s':>10} {'x' + str(args.jobs) + ' l/s':>9}"
          f" {'f/kloc':>7} | {'bandit l/s':>10} {'f/kloc':>7}")
    for label, files in corpora.items():
        lines = _lines(files)
        t1, found = run_mlscan(files, 1)
        tn, _ = run_mlscan(files, args.jobs) if args.jobs > 1 else (t1, found)
        serious = [f for f in found if f.severity.rank >= MEDIUM]
        row = (f"{label[-48:]:<48}{lines:>9} | {lines / t1:>10.0f} {lines / tn:>9.0f}"
               f" {1000 * len(serious) / max(lines, 1):>7.3f} | ")
        if have_bandit:
            tb, results = run_bandit(args.bandit, files)
            per_kloc = 1000 * len(_bandit_medium(results)) / max(lines, 1)
            row += f"{lines / tb:>10.0f} {per_kloc:>7.3f}"
        else:
            row += "   (bandit not installed)"
        print(row)
        by_rule = Counter(f.rule_id for f in serious)
        if by_rule:
            print(f"    mlscan medium+ by rule: {dict(sorted(by_rule.items()))}")
        for f in serious[: args.show]:
            print(f"    {f.rule_id} {f.severity.value} {f.path}:{f.line} {f.message[:90]}")

    cases = sabotage_cases()
    files = sorted({Path(c[0]) for c in cases})
    _, found = run_mlscan(files, 1)
    hit = {(f.path, f.line) for f in found if f.severity.rank >= MEDIUM}
    caught = Counter(c[2] for c in cases if (c[0], c[1]) in hit)
    total = Counter(c[2] for c in cases)
    line = f"\nsabotage cases caught on the right line (medium+): mlscan {sum(caught.values())}/"
    line += f"{len(cases)}"
    if have_bandit:
        _, results = run_bandit(args.bandit, files)
        bhit = {(str(r["filename"]), r["line_number"]) for r in _bandit_medium(results)}
        bcaught = Counter(c[2] for c in cases if (c[0], c[1]) in bhit)
        line += f", bandit {sum(bcaught.values())}/{len(cases)}"
    print(line)
    for code in sorted(total):
        extra = f"  bandit {bcaught[code]}" if have_bandit else ""
        print(f"    {code}: mlscan {caught[code]}/{total[code]}{extra}")


if __name__ == "__main__":
    main()
