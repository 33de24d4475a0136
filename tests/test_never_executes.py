"""Scanning never runs a payload and never changes what it scans.

Every malicious corpus sample would create the corpus marker file if anything loaded it
(raw pickles, torch zips, joblib, numpy, nested archives, 7z, legacy torch...). We scan the
whole corpus through the API in-process and through the CLI in a subprocess, then check
that the marker does not exist and that every file is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Corpus, scan_paths


def _tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_payloads_carry_the_marker(corpus: Corpus) -> None:
    """The test below can fail: uncompressed payloads really name the marker file."""
    marker = str(corpus.marker).encode()
    raw = [s for s in corpus.samples if s.expect == "malicious"
           and s.name.startswith(("pickle/", "legacy/stacked", "torchzip/standard"))]
    assert len(raw) > 50
    carrying = [s.name for s in raw if marker in s.path.read_bytes()]
    assert len(carrying) >= 0.8 * len(raw), "payloads should create the marker if run"


def test_formats_under_test(corpus: Corpus) -> None:
    names = {s.name.split("/", 1)[0] for s in corpus.samples if s.expect == "malicious"}
    assert {"pickle", "torchzip", "joblib", "numpy", "nested", "sevenz", "legacy",
            "wrapped", "ziptricks", "sleepy", "disguise"} <= names


def test_api_scan_in_process_never_executes(corpus: Corpus) -> None:
    before = _tree_hashes(corpus.root)
    report = scan_paths([corpus.root], base=corpus.root, jobs=1)
    assert report.summary.files >= len(corpus.samples) - 5
    assert not corpus.marker.exists(), "a payload ran during the in-process scan"
    assert _tree_hashes(corpus.root) == before, "scanning changed or created files"


def test_cli_scan_never_executes(corpus: Corpus, tmp_path: Path) -> None:
    before = _tree_hashes(corpus.root)
    out = tmp_path / "report.json"
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mlscan", "scan", str(corpus.root), "--format", "json",
         "--output", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    report = json.loads(out.read_text())
    assert report["findings"], "the CLI found nothing in a corpus full of payloads"
    assert not corpus.marker.exists(), "a payload ran during the CLI scan"
    assert _tree_hashes(corpus.root) == before, "scanning changed or created files"


def test_explain_never_executes(corpus: Corpus) -> None:
    """`mlscan explain` decompiles; it must not run anything either."""
    before = _tree_hashes(corpus.root)
    picked = [s for s in corpus.samples if s.expect == "malicious" and s.name.startswith(
        ("pickle/os_system", "pickle/popped_call", "torchzip/standard", "legacy/stacked",
         "pickle/truncated_after_payload"))]
    assert len(picked) == 5
    for sample in picked:
        proc = subprocess.run([sys.executable, "-m", "mlscan", "explain", str(sample.path)],
                              capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr, (sample.name, proc.stderr[-2000:])
    assert not corpus.marker.exists()
    assert _tree_hashes(corpus.root) == before
