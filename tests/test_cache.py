"""Result cache: unchanged files are not analyzed again; changes, settings and limit errors
are never served from it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mlscan import cache as cache_mod
from mlscan.analyzers import base as analyzers
from mlscan.analyzers import load_all
from mlscan.context import Budget, Limits, Settings
from mlscan.engine import ScanOptions, scan
from mlscan.errors import LimitExceeded
from mlscan.kinds import Kind
from mlscan.model import Report
from mlscan.rulesets.meta import MALFORMED

CALLS: list[str] = []


def _counting(src: analyzers.Source, budget: Budget) -> Iterator[analyzers.Finding]:
    CALLS.append(src.path)
    data = src.stream.read()
    if b"SLOW" in data:
        raise LimitExceeded("time budget exhausted")
    yield MALFORMED.finding(src.path, f"{src.name}: {len(data)} bytes", evidence="x")


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    load_all()  # every module registered now: nothing lands in the patched tables
    monkeypatch.setitem(analyzers._ANALYZERS, Kind.PICKLE, _counting)
    monkeypatch.setattr(analyzers, "_BATCH", [])
    CALLS.clear()
    return CALLS


def _scan(root: Path, cache_dir: Path | None, settings: Settings | None = None) -> Report:
    return scan(ScanOptions(paths=(root,), jobs=1, base=root, cache_dir=cache_dir,
                            settings=settings or Settings()))


def _pickle(path: Path, value: bytes = b"K\x01") -> None:
    """A one-value pickle: protocol 4, `value` (opcodes), STOP."""
    path.write_bytes(b"\x80\x04" + value + b".")


def test_second_run_on_unchanged_files_does_not_analyze_again(tmp_path: Path,
                                                              counting: list[str]) -> None:
    root, cache_dir = tmp_path / "repo", tmp_path / "cache"
    root.mkdir()
    for name in ("a.pkl", "b.pkl"):
        _pickle(root / name)
    first = _scan(root, cache_dir)
    assert sorted(counting) == ["a.pkl", "b.pkl"]
    second = _scan(root, cache_dir)
    assert sorted(counting) == ["a.pkl", "b.pkl"]  # no new calls
    assert second.findings == first.findings
    _pickle(root / "b.pkl", b"M\x02\x01")  # content change: analyzed again
    third = _scan(root, cache_dir)
    assert sorted(counting) == ["a.pkl", "b.pkl", "b.pkl"]
    assert third.findings != first.findings


def test_renamed_file_gets_its_own_path_in_cached_findings(tmp_path: Path,
                                                           counting: list[str]) -> None:
    root, cache_dir = tmp_path / "repo", tmp_path / "cache"
    root.mkdir()
    _pickle(root / "a.pkl")
    _scan(root, cache_dir)
    os.rename(root / "a.pkl", root / "z.pkl")
    report = _scan(root, cache_dir)
    assert [f.path for f in report.findings] == ["z.pkl"]
    assert "z.pkl" in report.findings[0].message


def test_limit_errors_are_never_cached(tmp_path: Path, counting: list[str]) -> None:
    root, cache_dir = tmp_path / "repo", tmp_path / "cache"
    root.mkdir()
    _pickle(root / "slow.pkl", b"\x8c\x04SLOW")
    assert [f.rule_id for f in _scan(root, cache_dir).findings] == ["MLS902"]
    assert [f.rule_id for f in _scan(root, cache_dir).findings] == ["MLS902"]
    assert counting == ["slow.pkl", "slow.pkl"]


def test_settings_are_part_of_the_key(tmp_path: Path, counting: list[str]) -> None:
    root, cache_dir = tmp_path / "repo", tmp_path / "cache"
    root.mkdir()
    _pickle(root / "a.pkl")
    _scan(root, cache_dir)
    _scan(root, cache_dir, Settings(limits=replace(Limits(), max_depth=2)))
    _scan(root, cache_dir, Settings(extra_pickle_allowlist=("m.C",)))
    assert counting == ["a.pkl"] * 3


def test_no_cache_dir_means_no_cache(tmp_path: Path, counting: list[str]) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    _pickle(root / "a.pkl")
    _scan(root, None)
    _scan(root, None)
    assert counting == ["a.pkl", "a.pkl"]


def test_damaged_entry_is_recomputed(tmp_path: Path, counting: list[str]) -> None:
    root, cache_dir = tmp_path / "repo", tmp_path / "cache"
    root.mkdir()
    _pickle(root / "a.pkl")
    _scan(root, cache_dir)
    for entry in cache_dir.rglob("*.json"):
        entry.write_text("{broken")
    assert len(_scan(root, cache_dir).findings) == 1
    assert counting == ["a.pkl", "a.pkl"]


def test_default_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLSCAN_CACHE_DIR", str(tmp_path / "x"))
    assert cache_mod.default_dir() == tmp_path / "x"
    monkeypatch.delenv("MLSCAN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.default_dir() == tmp_path / "xdg" / "mlscan"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the XDG spec says
    assert cache_mod.default_dir() == Path.home() / ".cache" / "mlscan"


def test_large_files_are_keyed_by_stat_not_hashed(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "HASH_LIMIT", 4)
    f = tmp_path / "big.bin"
    f.write_bytes(b"0123456789")
    assert (cache_mod.Hasher().identity(f) or "").startswith("stat:")
    assert cache_mod.Hasher().sha256(f) is not None


def test_hasher_never_opens_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert cache_mod.Hasher().sha256(fifo) is None


def test_batch_analyzer_runs_once_per_scan_and_not_at_all_when_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[list[str]] = []

    def fake_semgrep(targets: list[analyzers.Target],
                     budget: Budget) -> Iterator[analyzers.Finding]:
        runs.append(sorted(t.path for t in targets))
        for t in targets:
            yield MALFORMED.finding(t.path, "batch", line=1, evidence="b")

    load_all()  # import the real analyzers first, then replace them
    monkeypatch.setattr(analyzers, "_BATCH", [(frozenset({Kind.PYTHON}), fake_semgrep)])
    monkeypatch.setitem(analyzers._ANALYZERS, Kind.PYTHON, lambda src, budget: iter(()))
    root, cache_dir = tmp_path / "repo", tmp_path / "cache"
    root.mkdir()
    for i in range(5):
        (root / f"m{i}.py").write_text(f"x = {i}\n")
    first = _scan(root, cache_dir)
    assert runs == [[f"m{i}.py" for i in range(5)]]  # one start for all files
    assert _scan(root, cache_dir).findings == first.findings
    assert len(runs) == 1  # all cached: not started
    (root / "m3.py").write_text("x = 33\n")
    _scan(root, cache_dir)
    assert runs[-1] == ["m3.py"]  # only the changed file


def test_python_file_is_analyzed_again_when_a_sibling_module_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`from helpers import prune_tree` means what helpers.py says: editing helpers.py changes
    train.py's findings although train.py itself is unchanged."""
    root, cache_dir = tmp_path / "repo", tmp_path / "cache"
    root.mkdir()
    helpers, job = root / "helpers.py", root / "job.py"
    helpers.write_text("import shutil\n\nprune_tree = shutil.rmtree\n")
    job.write_text("import random\n\nfrom helpers import prune_tree\n\n\n"
                   "def finish(out_dir):\n    if random.random() < 0.05:\n"
                   "        prune_tree(out_dir)\n")
    load_all()
    monkeypatch.setattr(analyzers, "_BATCH", [])  # (the Python analyzer alone, no semgrep)

    def codes() -> list[tuple[str, str]]:
        return sorted((f.path, f.rule_id) for f in _scan(root, cache_dir).findings)

    assert ("job.py", "MLS308") in codes()
    helpers.write_text("import os\n\nprune_tree = os.path.getsize\n")
    os.utime(helpers, ns=(1, 1))  # (a different mtime even on coarse clocks)
    assert ("job.py", "MLS308") not in codes()
