"""Every generated non-pickle sample (fixtures/generate_formats.py), scanned end to end:
malicious ones are caught at high/critical with the expected rule, benign twins stay below
high, notices fire their rule without alarming."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fixtures.generate_formats import MARKER_NAME, FormatSample, generate  # noqa: E402
from mlscan.engine import ScanOptions, scan  # noqa: E402
from mlscan.model import Finding, Report  # noqa: E402

_DIR = Path(tempfile.mkdtemp(prefix="mlscan-formats-"))
atexit.register(shutil.rmtree, _DIR, True)
SAMPLES = generate(_DIR)
CHECKED = [s for s in SAMPLES if s.expect in ("malicious", "benign", "notice")]


@pytest.fixture(scope="module")
def report() -> Report:
    return scan(ScanOptions(paths=(_DIR,), jobs=1, base=_DIR))


@pytest.fixture(scope="module")
def by_file(report: Report) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = defaultdict(list)
    for f in report.findings:
        out[f.path].append(f)
    return out


def _show(findings: list[Finding]) -> str:
    return "\n".join(f"{f.rule_id} {f.severity.value} {f.member or ''}: {f.message}"
                     for f in findings) or "(no findings)"


@pytest.mark.parametrize("fsample", CHECKED, ids=[s.name for s in CHECKED])
def test_sample_meets_its_expectation(fsample: FormatSample,
                                      by_file: dict[str, list[Finding]]) -> None:
    sample = fsample
    found = by_file.get(sample.name, [])
    high = [f for f in found if f.severity.rank >= 3]
    rules = {f.rule_id for f in found}
    if sample.expect == "malicious":
        assert high, f"{sample.technique}: nothing at high or above\n{_show(found)}"
    else:
        assert not high, f"{sample.technique}: false alarm\n{_show(found)}"
    if sample.expect_rule:
        assert sample.expect_rule in rules, f"{sample.technique}: expected " \
            f"{sample.expect_rule}\n{_show(found)}"


def test_no_analyzer_crashed(report: Report) -> None:
    crashes = [f for f in report.findings if f.rule_id == "MLS903"]
    assert not crashes, _show(crashes)
    assert not report.errors


def test_every_format_rule_has_a_bad_and_the_corpus_has_benign_twins() -> None:
    fired = {s.expect_rule for s in SAMPLES}
    for code in ("MLS220", "MLS221", "MLS222", "MLS223", "MLS224", "MLS225", "MLS227",
                 "MLS228", "MLS229", "MLS230", "MLS231", "MLS232", "MLS235", "MLS240",
                 "MLS241", "MLS250", "MLS251"):
        assert code in fired, code
    benign_dirs = {s.name.split("/")[0] for s in SAMPLES if s.expect == "benign"}
    assert benign_dirs >= {"hf", "templates", "keras", "tf", "onnx", "gguf", "safetensors",
                           "yaml"}


def test_a_benign_transformers_folder_is_silent(by_file: dict[str, list[Finding]]) -> None:
    noisy = {p: fs for p, fs in by_file.items() if p.startswith("hf/bert/")}
    assert not noisy, noisy


def test_nothing_scanned_was_executed(report: Report) -> None:
    assert report.findings  # the scan ran
    assert not (_DIR / MARKER_NAME).exists()


def test_no_ml_framework_is_imported_to_analyze_formats() -> None:
    import subprocess

    code = (
        "import sys; from pathlib import Path\n"
        "from mlscan.engine import ScanOptions, scan\n"
        f"scan(ScanOptions(paths=(Path({str(_DIR)!r}),), jobs=1))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tensorflow', 'keras', 'onnx', 'onnxruntime', 'transformers', 'tf_keras'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", out.stdout
