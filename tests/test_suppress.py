"""Suppressions: inline comments with a required code, per-file ignores, sha256 allowlist and
baselines. Suppressed findings are always returned (counted and listed), never dropped."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlscan import registry
from mlscan.analyzers import base as analyzers
from mlscan.analyzers import load_all
from mlscan.baseline import Baseline, BaselineError, load, render
from mlscan.context import Budget
from mlscan.engine import ScanOptions, scan
from mlscan.kinds import Kind
from mlscan.model import Confidence, Finding, Rule, RuleDoc, Severity
from mlscan.suppress import SuppressOptions, apply_suppressions, parse_directives

FAKE = Rule("MLS998", "fake-danger", Severity.HIGH, Confidence.HIGH, "Test rule.",
            RuleDoc(what="w", why="y"))


def _fake_analyzer(src: analyzers.Source, budget: Budget) -> Iterator[Finding]:
    """Flags every line containing DANGER (stands in for the real Python checks)."""
    for i, line in enumerate(src.stream.read().decode().splitlines(), start=1):
        if "DANGER" in line:
            yield FAKE.finding(src.path, "danger", line=i, evidence=line.split("#")[0].strip())


@pytest.fixture
def fake_python(monkeypatch: pytest.MonkeyPatch) -> None:
    load_all()  # every module registered first: nothing lands in the patched tables
    monkeypatch.setitem(analyzers._ANALYZERS, Kind.PYTHON, _fake_analyzer)
    monkeypatch.setattr(analyzers, "_BATCH", [])
    registry.all_rules()
    monkeypatch.setitem(registry._RULES, FAKE.code, FAKE)


def _scan(root: Path, **kw: object) -> tuple[list[Finding], list[tuple[Finding, str]]]:
    report = scan(ScanOptions(paths=(root,), jobs=1, base=root, **kw))  # type: ignore[arg-type]
    return list(report.findings), list(zip(report.suppressed, report.suppressions, strict=True))


def _codes(findings: list[Finding]) -> list[tuple[str, int | None]]:
    return sorted((f.rule_id, f.line) for f in findings)


SOURCE = """\
a = DANGER()  # mlscan: ignore[MLS998] reviewed by sec team
b = DANGER()  # mlscan: ignore
# mlscan: ignore[MLS998]
c = DANGER()
d = DANGER()  # mlscan: ignore[MLS101, MLS998]
e = 1  # mlscan: ignore[MLS998]
f = "# mlscan: ignore[MLS998]" + DANGER
g = DANGER()  # mlscan: ignore[MLS12]
"""


def test_inline_ignores_need_a_code_and_unused_ones_are_reported(tmp_path: Path,
                                                                 fake_python: None) -> None:
    (tmp_path / "train.py").write_text(SOURCE)
    findings, suppressed = _scan(tmp_path)
    assert _codes([f for f, _ in suppressed]) == [("MLS998", 1), ("MLS998", 4), ("MLS998", 5)]
    assert dict((f.line, why) for f, why in suppressed)[1] == "inline: reviewed by sec team"
    assert _codes(findings) == [
        ("MLS905", 2),  # bare ignore: reported, suppresses nothing
        ("MLS905", 8),  # malformed code
        ("MLS906", 5),  # MLS101 matched no finding on that line
        ("MLS906", 6),  # nothing to suppress on line 6
        ("MLS998", 2), ("MLS998", 7), ("MLS998", 8),  # a string is not a comment
    ]


def test_no_inline_ignores_reports_everything(tmp_path: Path, fake_python: None) -> None:
    (tmp_path / "train.py").write_text(SOURCE)
    findings, suppressed = _scan(tmp_path, suppress=SuppressOptions(inline=False))
    assert suppressed == []
    assert [line for code, line in _codes(findings) if code == "MLS998"] == [1, 2, 4, 5, 7, 8]
    assert not [f for f in findings if f.rule_id in ("MLS905", "MLS906")]


def test_select_does_not_make_other_rules_suppressions_unused(tmp_path: Path,
                                                              fake_python: None) -> None:
    (tmp_path / "t.py").write_text("x = DANGER()  # mlscan: ignore[MLS998]\n")
    findings, suppressed = _scan(tmp_path, select=("MLS9",))
    assert findings == [] and len(suppressed) == 1


def test_directives_in_unparseable_code_still_work(tmp_path: Path, fake_python: None) -> None:
    (tmp_path / "t.py").write_text('x = DANGER(  # mlscan: ignore[MLS998]\ns = """\n')
    findings, suppressed = _scan(tmp_path)
    assert _codes([f for f, _ in suppressed]) == [("MLS998", 1)]
    assert not [f for f in findings if f.rule_id == "MLS906"]  # read once, not twice


def test_parse_directives_ignores_strings_and_docstrings() -> None:
    src = b'"""# mlscan: ignore"""\nx = "# mlscan: ignore"\ny = 1  # MLSCAN: Ignore[mls201]\n'
    directives, problems = parse_directives("p.py", src)
    assert problems == []
    assert [(d.line, d.codes, d.standalone) for d in directives] == [(3, ("MLS201",), False)]


def test_per_file_ignores_and_sha256_allowlist(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "bad.pt").write_bytes(b"junk one")
    (tmp_path / "bad.pt").write_bytes(b"junk two")
    (tmp_path / "other.pt").write_bytes(b"junk three")
    digest = hashlib.sha256(b"junk two").hexdigest()
    findings, suppressed = _scan(tmp_path, suppress=SuppressOptions(
        per_file_ignores=(("tests/*", ("MLS9",)),), allow_sha256=frozenset({digest})))
    assert [f.path for f in findings] == ["other.pt"]
    assert sorted((f.path, why) for f, why in suppressed) == [
        ("bad.pt", f"allow-sha256: {digest}"), ("tests/bad.pt", "per-file-ignores: tests/*")]


def test_sha256_allowlist_does_not_follow_changed_content(tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"junk but changed")
    digest = hashlib.sha256(b"junk two").hexdigest()
    findings, suppressed = _scan(tmp_path, suppress=SuppressOptions(
        allow_sha256=frozenset({digest})))
    assert len(findings) == 1 and suppressed == []


def _finding(path: str, line: int, evidence: str = "os.system(x)") -> Finding:
    return FAKE.finding(path, "danger", line=line, evidence=evidence)


def test_baseline_survives_code_moving_but_not_a_second_copy(tmp_path: Path) -> None:
    target = tmp_path / ".mlscan-baseline.json"
    target.write_text(render([_finding("a.py", 3)], target, tmp_path))
    baseline = load(target, tmp_path)
    moved, copy, other = _finding("a.py", 40), _finding("a.py", 41), _finding("b.py", 3)
    out = apply_suppressions([moved, copy, other], SuppressOptions(baseline=baseline))
    assert out.suppressed == [(moved, "baseline")]
    assert out.findings == [copy, other]


def test_baseline_matches_from_another_working_directory(tmp_path: Path) -> None:
    target = tmp_path / "b.json"
    target.write_text(render([_finding("sub/a.py", 3)], target, tmp_path))
    from_sub = load(target, tmp_path / "sub")  # display paths now relative to sub/
    assert from_sub.key(_finding("a.py", 9)) in from_sub.fingerprints


@pytest.mark.parametrize("content,match", [
    ("{", "not a JSON baseline"), ('{"tool": "other", "findings": []}', "not an mlscan"),
    ('{"tool": "mlscan", "version": 99, "findings": []}', "not supported"),
    ('{"tool": "mlscan", "version": 1, "findings": [{}]}', "without a fingerprint"),
])
def test_bad_baseline_files_are_errors(tmp_path: Path, content: str, match: str) -> None:
    target = tmp_path / "b.json"
    target.write_text(content)
    with pytest.raises(BaselineError, match=match):
        load(target, tmp_path)
    with pytest.raises(BaselineError, match="cannot read"):
        load(tmp_path / "missing.json", tmp_path)


def test_baseline_write_then_scan_with_baseline_via_cli(tmp_path: Path) -> None:
    env = {**os.environ, "MLSCAN_NO_CACHE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlscan", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    (tmp_path / "old.pt").write_bytes(b"junk")
    wrote = run("baseline", "write", ".")
    assert wrote.returncode == 0, wrote.stderr
    doc = json.loads((tmp_path / ".mlscan-baseline.json").read_text())
    assert [e["path"] for e in doc["findings"]] == ["old.pt"]
    (tmp_path / "new.pt").write_bytes(b"more junk")
    proc = run("scan", ".", "--baseline", ".mlscan-baseline.json", "--format", "json",
               "--fail-on", "medium")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert [f["path"] for f in report["findings"]] == ["new.pt"]
    assert [f["path"] for f in report["suppressed"]] == ["old.pt"]
    text = run("scan", ".", "--baseline", ".mlscan-baseline.json")
    assert "1 suppressed" in text.stdout
    missing = run("scan", ".", "--baseline", "nope.json")
    assert missing.returncode == 2 and "nope.json" in missing.stderr


def test_baseline_object_counts_repeats() -> None:
    b = Baseline(Path("/r"), Path("/r"), ("x", "x", "y"))
    assert b.counts() == {"x": 2, "y": 1}


def test_inline_ignore_of_a_real_code_rule_via_cli(tmp_path: Path) -> None:
    (tmp_path / "load.py").write_text(
        "import pickle\n\n\ndef read(blob):\n"
        "    a = pickle.loads(blob)  # mlscan: ignore[MLS103] blob is signed\n"
        "    return a, pickle.loads(blob)\n")
    env = {**os.environ, "MLSCAN_NO_CACHE": "1"}

    def run(*flags: str) -> dict[str, list[dict[str, object]]]:
        proc = subprocess.run([sys.executable, "-m", "mlscan", "scan", ".", "--format", "json",
                               *flags], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    report = run()
    assert [(f["rule_id"], f["line"]) for f in report["findings"]] == [("MLS103", 6)]
    assert [(f["rule_id"], f["line"]) for f in report["suppressed"]] == [("MLS103", 5)]
    audit = run("--no-inline-ignores")
    assert [(f["rule_id"], f["line"]) for f in audit["findings"]] == [("MLS103", 5),
                                                                      ("MLS103", 6)]
    assert audit["suppressed"] == []
