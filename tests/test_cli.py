"""The CLI contract of DESIGN.md: exit codes, JSON shape, demo quickstart, explain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mlscan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlscan", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "MLSCAN_NO_CACHE": "1",
                               "PYTHONPATH": str(ROOT)})


def demo(tmp_path: Path) -> Path:
    subprocess.run([sys.executable, str(ROOT / "fixtures" / "demo.py"), str(tmp_path / "d")],
                   check=True, capture_output=True)
    return tmp_path / "d"


def test_version_answers_without_the_cli_framework() -> None:
    out = mlscan("--version")
    assert out.returncode == 0 and out.stdout.startswith("mlscan ")


def test_demo_quickstart_flags_every_malicious_file_and_no_clean_one(tmp_path: Path) -> None:
    out = mlscan("scan", str(demo(tmp_path)), "--format", "json")
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"version", "findings", "suppressed", "errors", "summary"}
    serious = {f["path"] for f in doc["findings"] if f["severity"] in ("high", "critical")}
    assert serious == {"malicious/backdoor.pt", "malicious/model.safetensors",
                       "malicious/broken_after_payload.bin", "malicious/compressed.joblib"}
    first = doc["findings"][0]
    assert set(first) == {"rule_id", "rule", "severity", "confidence", "path", "member", "line",
                          "column", "offset", "message", "evidence", "fingerprint"}
    assert doc["summary"]["files"] == 6


def test_fail_on_and_exit_zero(tmp_path: Path) -> None:
    d = demo(tmp_path)
    assert mlscan("scan", str(d), "--fail-on", "critical", "-f", "json").returncode == 1
    assert mlscan("scan", str(d / "clean"), "-f", "json").returncode == 0
    assert mlscan("scan", str(d), "--exit-zero", "-f", "json").returncode == 0


def test_usage_errors_exit_2() -> None:
    assert mlscan("scan", "/nonexistent/path").returncode == 2
    assert mlscan("scan", ".", "--format", "xml").returncode == 2
    assert mlscan("scan", ".", "--fail-on", "severe").returncode == 2
    assert mlscan("rules", "MLS999").returncode == 2


def test_explain_shows_the_decompiled_call_and_refuses_other_formats(tmp_path: Path) -> None:
    d = demo(tmp_path)
    out = mlscan("explain", str(d / "malicious" / "backdoor.pt"))
    assert out.returncode == 0
    assert "dangerous posix.system" in out.stdout and "system('echo" in out.stdout
    (tmp_path / "config.json").write_text("{}")
    bad = mlscan("explain", str(tmp_path / "config.json"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_rules_lists_every_family_and_prints_a_doc() -> None:
    listing = mlscan("rules").stdout
    for prefix in ("MLS1", "MLS2", "MLS3", "MLS4", "MLS5", "MLS9"):
        assert f"\n{prefix}" in "\n" + listing
    doc = mlscan("rules", "MLS201").stdout
    for heading in ("## What it does", "## Why it matters", "## Example", "## Use instead"):
        assert heading in doc
