"""SARIF output: valid against the official 2.1.0 schema (vendored in tests/data, OASIS) and
carrying what GitHub code scanning requires, for code and for binary model findings."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlscan import registry
from mlscan.model import Confidence, Finding, Report, ScanError, Severity, Summary
from mlscan.reporters import sarif

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
VALIDATOR = jsonschema.Draft4Validator(SCHEMA)


def _finding(rule_id: str = "MLS201", **kw: Any) -> Finding:
    rule = registry.get(rule_id)
    fields: dict[str, Any] = {"rule_id": rule.code, "rule": rule.name, "severity": rule.severity,
                              "confidence": rule.confidence, "path": "models/x.pt",
                              "message": "posix.system is called", "evidence": "posix.system"}
    fields.update(kw)
    return Finding(**fields)


CODE = _finding("MLS905", path="src/train loop.py", line=12, column=5, member=None,
                message="suppression comment names no rule code", evidence="# mlscan: ignore")
BINARY = _finding(member="archive/data.pkl", offset=57)
SUPPRESSED_INLINE = _finding("MLS906", path="src/a.py", line=3, message="unused",
                             evidence="ignore[MLS101]")
SUPPRESSED_BASELINE = _finding(path="old/model.pt", member="archive/data.pkl", offset=3)


def _render(report: Report, root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(sarif.render(report, srcroot=root))
    return doc


def _report() -> Report:
    return Report(findings=(CODE, BINARY), suppressed=(SUPPRESSED_INLINE, SUPPRESSED_BASELINE),
                  suppressions=("inline: reviewed", "baseline"),
                  summary=Summary(files=3, bytes=10, seconds=0.1))


def check_github_requirements(doc: dict[str, Any]) -> None:
    """What GitHub code scanning needs beyond the schema (docs.github.com, 'SARIF support')."""
    assert doc["version"] == "2.1.0" and doc["$schema"]
    assert len(doc["runs"]) == 1
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "mlscan" and driver["semanticVersion"] and driver["informationUri"]
    ids = [r["id"] for r in driver["rules"]]
    assert len(ids) == len(set(ids))
    for rule in driver["rules"]:
        assert rule["name"] and rule["shortDescription"]["text"]
        assert rule["fullDescription"]["text"]
        assert rule["help"]["text"] and rule["help"]["markdown"]
        assert rule["defaultConfiguration"]["level"] in {"error", "warning", "note"}
        props = rule["properties"]
        assert "security" in props["tags"]
        assert props["precision"] in {"very-high", "high", "medium", "low"}
        assert 0.0 < float(props["security-severity"]) <= 10.0
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"].endswith("/")
    assert len(run["results"]) <= sarif.MAX_RESULTS
    for result in run["results"]:
        assert result["ruleId"] == driver["rules"][result["ruleIndex"]]["id"]
        assert result["level"] in {"error", "warning", "note"}
        assert result["message"]["text"]
        assert len(result["locations"]) == 1
        phys = result["locations"][0]["physicalLocation"]
        uri = phys["artifactLocation"]["uri"]
        if phys["artifactLocation"].get("uriBaseId") == "%SRCROOT%":
            assert not uri.startswith("/") and " " not in uri and ".." not in uri.split("/")
        else:
            assert uri.startswith("file:///")
        assert phys["region"]["startLine"] >= 1
        assert result["partialFingerprints"]["mlscanFingerprint/v1"]


def test_report_validates_against_the_official_schema(tmp_path: Path) -> None:
    doc = _render(_report(), tmp_path)
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    check_github_requirements(doc)


def test_schema_validator_rejects_a_broken_document(tmp_path: Path) -> None:
    """The validator can fail: a result without a message is invalid SARIF."""
    doc = _render(_report(), tmp_path)
    del doc["runs"][0]["results"][0]["message"]
    assert list(VALIDATOR.iter_errors(doc))


def test_every_registered_rule_is_described_with_github_properties(tmp_path: Path) -> None:
    doc = _render(Report(), tmp_path)
    described = {r["id"]: r for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert set(described) == set(registry.all_rules())
    mls201 = described["MLS201"]
    assert mls201["properties"]["security-severity"] == "9.5"
    assert "external/cwe/cwe-502" in mls201["properties"]["tags"]
    assert "## What it does" in mls201["help"]["markdown"] or "What it does" in \
        mls201["help"]["markdown"]
    assert mls201["helpUri"].endswith("#mls201-pickle-dangerous-global")


def test_binary_finding_has_line_one_member_offset_and_our_line_hash(tmp_path: Path) -> None:
    doc = _render(_report(), tmp_path)
    results = [r for r in doc["runs"][0]["results"] if "suppressions" not in r]
    binary = next(r for r in results if r["properties"].get("member"))
    loc = binary["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "models/x.pt", "uriBaseId": "%SRCROOT%"}
    assert loc["region"] == {"startLine": 1}
    assert binary["properties"]["member"] == "archive/data.pkl"
    assert binary["properties"]["offset"] == 57
    assert binary["partialFingerprints"]["primaryLocationLineHash"] == \
        f"{BINARY.fingerprint[:16]}:1"
    assert binary["level"] == "error"


def test_code_finding_keeps_line_column_and_leaves_line_hash_to_github(tmp_path: Path) -> None:
    doc = _render(_report(), tmp_path)
    code = next(r for r in doc["runs"][0]["results"] if r["ruleId"] == "MLS905")
    loc = code["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "src/train%20loop.py"
    assert loc["region"] == {"startLine": 12, "startColumn": 5}
    assert "primaryLocationLineHash" not in code["partialFingerprints"]
    assert code["level"] == "note"


def test_suppressed_findings_carry_sarif_suppressions(tmp_path: Path) -> None:
    doc = _render(_report(), tmp_path)
    supp = {r["ruleId"]: r["suppressions"] for r in doc["runs"][0]["results"]
            if "suppressions" in r}
    assert supp["MLS906"] == [{"kind": "inSource", "status": "accepted",
                               "justification": "inline: reviewed"}]
    assert supp["MLS201"][0]["kind"] == "external"
    assert doc["runs"][0]["properties"]["suppressed"] == 2


def test_path_outside_the_source_root_is_an_absolute_file_uri(tmp_path: Path) -> None:
    outside = _finding(path="/elsewhere/m.pt")
    doc = _render(Report(findings=(outside,)), tmp_path)
    assert not list(VALIDATOR.iter_errors(doc))
    loc = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "file:///elsewhere/m.pt"}


def test_results_are_capped_most_severe_first_and_the_cap_is_reported(tmp_path: Path) -> None:
    low = [_finding("MLS905", path=f"f{i}.py", line=1, evidence=str(i))
           for i in range(sarif.MAX_RESULTS)]
    report = Report(findings=(*low, BINARY), errors=(ScanError("x", "boom"),))
    doc = _render(report, tmp_path)
    run = doc["runs"][0]
    assert len(run["results"]) == sarif.MAX_RESULTS
    assert run["results"][0]["ruleId"] == "MLS201"  # the critical one survives the cap
    assert run["properties"]["omittedResults"] == 1
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert any("1 results omitted" in n["message"]["text"] for n in notes)
    assert run["invocations"][0]["executionSuccessful"] is False
    check_github_requirements(doc)
    assert len(sarif.render(report, srcroot=tmp_path)) < 10 * 1024 * 1024


def test_long_evidence_is_clipped(tmp_path: Path) -> None:
    f = _finding(evidence="x" * 100_000, message="m" * 100_000)
    result = _render(Report(findings=(f,)), tmp_path)["runs"][0]["results"][0]
    assert len(result["properties"]["evidence"]) <= sarif.MAX_TEXT
    assert len(result["message"]["text"]) <= sarif.MAX_TEXT


def test_cli_writes_valid_sarif_for_a_malicious_pickle(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("true",))

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    (tmp_path / "models" / "junk.pt").write_bytes(b"not a model")
    out = tmp_path / "out.sarif"
    env = {**os.environ, "MLSCAN_NO_CACHE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mlscan", "scan", "models", "--format", "sarif",
                           "-o", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(out.read_text())
    assert not list(VALIDATOR.iter_errors(doc))
    check_github_requirements(doc)
    run = doc["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.resolve().as_uri() + "/" \
        or run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    by_uri = {(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], r["ruleId"])
              for r in run["results"]}
    assert ("models/evil.pkl", "MLS201") in by_uri
    assert ("models/junk.pt", "MLS901") in by_uri


@pytest.mark.parametrize("severity,level", [(Severity.CRITICAL, "error"),
                                            (Severity.HIGH, "error"),
                                            (Severity.MEDIUM, "warning"),
                                            (Severity.LOW, "note")])
def test_severity_maps_to_level(severity: Severity, level: str, tmp_path: Path) -> None:
    f = _finding(severity=severity, confidence=Confidence.LOW)
    assert _render(Report(findings=(f,)), tmp_path)["runs"][0]["results"][0]["level"] == level


def test_undecodable_file_names_are_percent_encoded(tmp_path: Path) -> None:
    odd = _finding(path="bad\udcff name.pt")
    doc = _render(Report(findings=(odd,)), tmp_path)
    loc = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "bad%FF%20name.pt"


@pytest.mark.parametrize("fmt", ["sarif", "markdown", "text", "json"])
def test_cli_survives_undecodable_file_names(tmp_path: Path, fmt: str) -> None:
    (tmp_path / os.fsdecode(b"bad\xff.pt")).write_bytes(b"junk")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mlscan", "scan", ".", "--format", fmt,
                           "-o", str(out), "--fail-on", "critical"], cwd=tmp_path,
                          env={**os.environ, "MLSCAN_NO_CACHE": "1"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "bad" in out.read_text(encoding="utf-8")
