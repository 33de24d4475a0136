"""Noise check: the Python analyzer's medium+ findings per 1,000 lines on benign corpora.

    python noise.py [-v] CORPUS_DIR...     (e.g. site-packages/torch, /tmp/corpus/timm)

Runs `analyze_text` (the analyzer alone, no semgrep) over every .py file, two processes, and
prints findings per 1,000 lines per corpus; `-v` lists each finding as `    path:line CODE sev msg`
so two runs can be diffed. Corpora are read as text and never imported.
"""
from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _one(path: str) -> tuple[int, list[str]]:
    from mlscan.analyzers.python_code import analyze_text
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0, []
    try:
        found = analyze_text(text, path)
    except Exception as exc:  # noqa: BLE001 - a parse failure is not noise; say so
        return text.count("\n"), [f"{path}:0 ERROR {type(exc).__name__}"]
    rows = [f"{path}:{f.line} {f.rule_id} {f.severity.value} {f.message[:90]}"
            for f in found if f.severity.rank >= 2]
    return text.count("\n"), rows


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    corpora = [a for a in argv if a != "-v"]
    with ProcessPoolExecutor(2) as pool:
        for corpus in corpora:
            files = sorted(str(p) for p in Path(corpus).rglob("*.py"))
            lines, rows = 0, []
            for n, found in pool.map(_one, files, chunksize=16):
                lines += n
                rows += found
            per_k = 1000 * len(rows) / max(lines, 1)
            print(f"{corpus}: {len(rows)} findings / {lines} lines = {per_k:.3f} per 1,000")
            if verbose:
                for row in rows:
                    print("    " + row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
