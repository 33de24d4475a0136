"""Every generated sample gets the verdict a correct scanner must give.

malicious -> at least one finding at high or critical for that file (and `expect_rule` if set);
benign    -> no finding at high or above. One scan of the whole corpus, like a user's.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from conftest import Corpus, describe, high_or_above

from fixtures.generate import Sample
from mlscan.model import Finding


def test_corpus_covers_every_format_and_both_verdicts(corpus: Corpus) -> None:
    kinds = Counter(s.name.split("/", 1)[0] for s in corpus.samples)
    for folder in ("pickle", "torchzip", "ziptricks", "sevenz", "wrapped", "legacy", "joblib",
                   "numpy", "disguise", "nested", "sleepy", "torch", "sklearn", "data", "hf"):
        assert kinds[folder] > 0, f"no samples under {folder}/"
    verdicts = Counter(s.expect for s in corpus.samples)
    assert verdicts["malicious"] >= 100 and verdicts["benign"] >= 40, verdicts


def test_malicious_sample_is_flagged_high(malicious_sample: Sample,
                                          findings_by_file: dict[str, list[Finding]]) -> None:
    found = findings_by_file.get(malicious_sample.name, [])
    assert high_or_above(found), (
        f"{malicious_sample.technique}: no finding at high or above\n{describe(found)}")
    if malicious_sample.expect_rule:
        rules = {f.rule_id for f in found}
        assert malicious_sample.expect_rule in rules, (
            f"{malicious_sample.technique}: expected {malicious_sample.expect_rule}\n"
            f"{describe(found)}")


def test_benign_sample_has_nothing_high(benign_sample: Sample,
                                        findings_by_file: dict[str, list[Finding]]) -> None:
    found = findings_by_file.get(benign_sample.name, [])
    assert not high_or_above(found), (
        f"{benign_sample.technique}: false positive at high or above\n{describe(found)}")


def test_advisory_regression(advisory_sample: Sample,
                             findings_by_file: dict[str, list[Finding]]) -> None:
    """One test per public scanner advisory (the test id is the GHSA/CVE id)."""
    found = findings_by_file.get(advisory_sample.name, [])
    assert advisory_sample.expect == "malicious"
    assert high_or_above(found), (
        f"{advisory_sample.advisory} ({advisory_sample.technique}) not detected\n"
        f"{describe(found)}")


def test_advisory_ids_are_unique_and_well_formed(corpus: Corpus) -> None:
    ids = [s.advisory for s in corpus.samples if s.advisory]
    assert len(ids) == len(set(ids)), "each advisory has exactly one regression sample"
    for adv in ids:
        assert adv.startswith(("GHSA-", "CVE-")), adv
    assert len(ids) >= 25


def _picklescan_dangerous(path: Path) -> bool:
    from picklescan.scanner import SafetyLevel, scan_file_path

    try:
        result = scan_file_path(str(path))
    except Exception:  # noqa: BLE001 - the oracle crashing is not a verdict
        return False
    return result.issues_count > 0 or any(
        g.safety == SafetyLevel.Dangerous for g in result.globals)


def test_differential_picklescan_oracle(corpus: Corpus,
                                        findings_by_file: dict[str, list[Finding]]) -> None:
    """Every malicious sample picklescan flags as dangerous, mlscan flags at high+ too."""
    flagged = [s for s in corpus.samples
               if s.expect == "malicious" and _picklescan_dangerous(s.path)]
    assert len(flagged) >= 30, "picklescan oracle flagged suspiciously few samples"
    missed = [s.name for s in flagged if not high_or_above(findings_by_file.get(s.name, []))]
    assert not missed, f"picklescan flags these but mlscan does not (high+): {missed}"


def test_generator_is_deterministic(tmp_path: Path) -> None:
    """Same output folder and marker -> byte-identical malicious samples."""
    from fixtures.common import Marker
    from fixtures.containers import all_containers
    from fixtures.malicious import all_pickles

    mark = Marker(tmp_path / "m")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = {s.name: s.data for s in all_pickles(mark) + all_containers(mark, tmp_path / "a")}
    second = {s.name: s.data for s in all_pickles(mark) + all_containers(mark, tmp_path / "b")}
    changed = [n for n in first if first[n] != second.get(n)]
    assert not changed, changed


def test_generator_runs_as_a_script(tmp_path: Path, corpus: Corpus) -> None:
    """`python fixtures/generate.py OUTDIR` writes the same sample set plus an index."""
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "fixtures" / "generate.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    index = json.loads((tmp_path / "INDEX.json").read_text())
    assert sorted(e["name"] for e in index) == sorted(s.name for s in corpus.samples)
    assert all((tmp_path / e["name"]).is_file() for e in index)
