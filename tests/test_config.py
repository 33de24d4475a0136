"""Configuration: found by walking up, validated strictly, merged with flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlscan.config import (
    Config,
    ConfigError,
    find_config,
    load_config,
    parse_table,
    rebase_pattern,
)
from mlscan.context import MiB
from mlscan.model import Severity
from mlscan.options import Flags, OptionsError, build

SHA = "a" * 64


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLSCAN_NO_CACHE": "1"}
    return subprocess.run([sys.executable, "-m", "mlscan", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_pyproject_table_is_found_by_walking_up(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.mlscan]\nfail-on = "critical"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config(deep) == tmp_path / "pyproject.toml"
    assert load_config(tmp_path / "pyproject.toml").fail_on is Severity.CRITICAL


def test_pyproject_without_mlscan_table_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "mlscan.toml").write_text('min-severity = "high"\n')
    inner = tmp_path / "pkg"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[tool.ruff]\nline-length = 100\n')
    assert find_config(inner) == tmp_path / "mlscan.toml"


def test_mlscan_toml_wins_over_pyproject_in_the_same_folder(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.mlscan]\nselect = ["MLS2"]\n')
    (tmp_path / "mlscan.toml").write_text('select = ["MLS1"]\n')
    found = find_config(tmp_path / "some_file.py")
    assert found == tmp_path / "mlscan.toml"
    assert load_config(found).select == ("MLS1",)


def test_no_config_anywhere_gives_none(tmp_path: Path) -> None:
    found = find_config(tmp_path)
    assert found is None or tmp_path not in found.parents


def test_every_documented_key_parses(tmp_path: Path) -> None:
    cfg = parse_table({
        "select": ["MLS1", "MLS2"], "ignore": "MLS905", "min-severity": "medium",
        "fail-on": "critical", "exclude": ["third_party/"],
        "per-file-ignores": {"tests/*": ["MLS3"]}, "extend-pickle-allowlist": ["mypkg.Model"],
        "allow-sha256": [SHA.upper()], "baseline": "base.json", "cache": False,
        "limits": {"max-seconds-per-file": 2.5, "max-decompressed-mb": 10, "max-depth": 3,
                   "max-members": 9, "max-pickle-memo": 100, "max-pickle-stack": 100,
                   "max-compression-ratio": 50, "max-text-mb": 1},
    }, tmp_path / "mlscan.toml")
    assert cfg.ignore == ("MLS905",)
    assert cfg.min_severity is Severity.MEDIUM and cfg.fail_on is Severity.CRITICAL
    assert cfg.per_file_ignores == (("tests/*", ("MLS3",)),)
    assert cfg.allow_sha256 == frozenset({SHA})
    assert cfg.baseline == tmp_path / "base.json"
    assert cfg.cache is False
    assert cfg.limits.max_seconds_per_file == 2.5
    assert cfg.limits.max_decompressed_bytes == 10 * MiB
    assert cfg.limits.max_text_bytes == 1 * MiB
    assert cfg.limits.max_depth == 3


@pytest.mark.parametrize("table,key", [
    ({"selct": ["MLS1"]}, "selct"),
    ({"limits": {"max-seconds": 3}}, "limits.max-seconds"),
    ({"fail-on": "urgent"}, "fail-on"),
    ({"limits": {"max-depth": -1}}, "limits.max-depth"),
    ({"limits": {"max-depth": True}}, "limits.max-depth"),
    ({"allow-sha256": ["abc"]}, "allow-sha256"),
    ({"select": [1, 2]}, "select"),
    ({"per-file-ignores": ["tests/*"]}, "per-file-ignores"),
    ({"cache": "no"}, "cache"),
])
def test_bad_keys_and_values_are_errors_naming_the_key(table: dict[str, object], key: str,
                                                        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_table(table, tmp_path / "mlscan.toml")


def test_unknown_key_in_pyproject_exits_2_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.mlscan]\nfial-on = "low"\n')
    (tmp_path / "a.py").write_text("x = 1\n")
    proc = _run(["scan", "."], tmp_path)
    assert proc.returncode == 2
    assert "tool.mlscan.fial-on" in proc.stderr and "unknown key" in proc.stderr


def test_invalid_toml_exits_2(tmp_path: Path) -> None:
    (tmp_path / "mlscan.toml").write_text("select = [\n")
    proc = _run(["scan", "."], tmp_path)
    assert proc.returncode == 2 and "invalid TOML" in proc.stderr


def test_flags_override_config_and_ignores_combine(tmp_path: Path, monkeypatch:
                                                   pytest.MonkeyPatch) -> None:
    (tmp_path / "mlscan.toml").write_text(
        'select = ["MLS2"]\nignore = ["MLS905"]\nmin-severity = "high"\nfail-on = "low"\n'
        'exclude = ["vendor/*"]\n[limits]\nmax-depth = 2\n')
    monkeypatch.chdir(tmp_path)
    opts, fail_on = build(Flags(paths=(tmp_path,), select=("MLS1",), ignore=("MLS906",),
                                min_severity="medium", exclude=("*.bak",)))
    assert opts.select == ("MLS1",)
    assert opts.ignore == ("MLS905", "MLS906")
    assert opts.min_severity is Severity.MEDIUM
    assert fail_on is Severity.LOW  # from the file: no flag given
    assert opts.exclude == ("vendor/*", "*.bak")
    assert opts.settings.limits.max_depth == 2


def test_isolated_ignores_found_config_but_explicit_config_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mlscan.toml").write_text('ignore = ["MLS2"]\n')
    other = tmp_path / "audit.toml"
    other.write_text('ignore = ["MLS3"]\n')
    monkeypatch.chdir(tmp_path)
    assert build(Flags(paths=(tmp_path,), isolated=True))[0].ignore == ()
    assert build(Flags(paths=(tmp_path,), config=other, isolated=True))[0].ignore == ("MLS3",)
    with pytest.raises(OptionsError, match="no such file"):
        build(Flags(paths=(tmp_path,), config=tmp_path / "missing.toml"))


def test_config_exclude_applies_to_explicitly_passed_files(tmp_path: Path) -> None:
    (tmp_path / "mlscan.toml").write_text('exclude = ["vendor/"]\n')
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "junk.pt").write_bytes(b"not a model")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    proc = _run(["scan", "vendor/junk.pt", "junk.pt", "--format", "json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"path": "junk.pt"' in proc.stdout
    assert "vendor/junk.pt" not in proc.stdout


def test_config_limits_reach_analyzers_through_settings(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mlscan]\nextend-pickle-allowlist = ["mypkg.Model"]\n'
        '[tool.mlscan.limits]\nmax-seconds-per-file = 1.5\n')
    monkeypatch.chdir(tmp_path)
    opts, _ = build(Flags(paths=(tmp_path,)))
    assert opts.settings.extra_pickle_allowlist == ("mypkg.Model",)
    assert opts.settings.limits.max_seconds_per_file == 1.5
    import pickle

    assert pickle.loads(pickle.dumps(opts.settings)) == opts.settings  # reaches workers


def test_patterns_are_relative_to_the_config_folder(tmp_path: Path) -> None:
    root, sub = tmp_path, tmp_path / "sub"
    assert rebase_pattern("*.pt", root, sub) == "*.pt"  # any component: unchanged
    assert rebase_pattern("sub/tests/*", root, sub) == "tests/*"
    assert rebase_pattern("tests/", root, sub) == "tests/"
    assert rebase_pattern("sub/tests/", root, sub) == "tests"
    assert rebase_pattern("other/x/*", root, sub) == (tmp_path / "other/x/*").as_posix()


def test_default_config_is_empty() -> None:
    cfg = Config()
    assert cfg.root is None and cfg.cache and not cfg.select


def test_config_shipped_inside_the_scanned_tree_is_announced(tmp_path: Path) -> None:
    repo = tmp_path / "downloaded"
    repo.mkdir()
    (repo / "mlscan.toml").write_text('exclude = ["*.pt"]\n')
    (repo / "junk.pt").write_bytes(b"junk")
    outside = _run(["scan", "downloaded"], tmp_path)
    assert "note: using configuration" in outside.stderr and "--isolated" in outside.stderr
    assert "junk.pt" not in outside.stdout
    audit = _run(["scan", "downloaded", "--isolated"], tmp_path)
    assert "junk.pt" in audit.stdout and "note:" not in audit.stderr
    inside = _run(["scan", "."], repo)  # your own project: no note
    assert "note:" not in inside.stderr
