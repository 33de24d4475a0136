"""`mlscan fix`: libcst rewrites of unsafe loading calls, formatting kept, scan-driven."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlscan.fix import fix_source

BEFORE = '''import torch
import yaml


def load(path, device):
    # a comment that must survive
    state = torch.load(path, map_location=device)
    other = torch.load(
        path,
        map_location="cpu",
    )
    with open("cfg.yaml") as f:
        cfg = yaml.load(f, Loader=yaml.Loader)
    raw = yaml.load(open("x.yaml"))
    keep = torch.load(path)  # mlscan: ignore[MLS102]
    safe = torch.load(path, weights_only=True)
    risky = torch.load(path, weights_only=False)
    passthrough = torch.load(path, **kwargs)
    return state, other, cfg, raw, keep, safe, risky, passthrough
'''

AFTER = '''import torch
import yaml


def load(path, device):
    # a comment that must survive
    state = torch.load(path, map_location=device, weights_only=True)
    other = torch.load(
        path,
        map_location="cpu",
        weights_only=True,
    )
    with open("cfg.yaml") as f:
        cfg = yaml.safe_load(f)
    raw = yaml.safe_load(open("x.yaml"))
    keep = torch.load(path)  # mlscan: ignore[MLS102]
    safe = torch.load(path, weights_only=True)
    risky = torch.load(path, weights_only=False)
    passthrough = torch.load(path, **kwargs)
    return state, other, cfg, raw, keep, safe, risky, passthrough
'''


def mlscan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlscan", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_fix_rewrites_only_reported_calls_and_keeps_the_layout(tmp_path: Path) -> None:
    target = tmp_path / "train.py"
    target.write_text(BEFORE)
    done = mlscan("fix", "train.py", "--isolated", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert target.read_text() == AFTER
    assert "Fixed 4 call(s) in 1 file(s)" in done.stderr


def test_fixed_file_scans_clean_and_a_second_fix_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "train.py"
    target.write_text(BEFORE)
    mlscan("fix", ".", "--isolated", cwd=tmp_path)
    again = mlscan("fix", ".", "--isolated", cwd=tmp_path)
    assert "Fixed 0 call(s)" in again.stderr
    assert target.read_text() == AFTER
    scan = mlscan("scan", "train.py", "--isolated", "--no-cache", "--select", "MLS102",
                  "--select", "MLS105", "-f", "json", cwd=tmp_path)
    assert [f["rule_id"] for f in json.loads(scan.stdout)["findings"]] == []


def test_diff_prints_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "train.py"
    target.write_text(BEFORE)
    done = mlscan("fix", "train.py", "--diff", "--isolated", cwd=tmp_path)
    assert done.returncode == 1
    assert "+    state = torch.load(path, map_location=device, weights_only=True)" in done.stdout
    assert target.read_text() == BEFORE


def test_fix_source_only_touches_the_given_lines() -> None:
    text = "import torch\na = torch.load(p)\nb = torch.load(q)\n"
    after, count = fix_source(text, {3: {"MLS102"}})
    assert count == 1
    assert after == "import torch\na = torch.load(p)\nb = torch.load(q, weights_only=True)\n"


def test_yaml_calls_with_other_arguments_are_left_alone() -> None:
    text = "import yaml\nx = yaml.load(f, yaml.Loader)\n"
    after, count = fix_source(text, {2: {"MLS105"}})
    assert (after, count) == (text, 0)  # positional Loader: not a one-argument call


def test_unparsable_file_is_skipped_not_crashed(tmp_path: Path) -> None:
    target = tmp_path / "bad.py"
    target.write_bytes(b"import torch\nx = torch.load(p\n")
    done = mlscan("fix", "bad.py", "--isolated", cwd=tmp_path)
    assert done.returncode == 0
    assert target.read_bytes() == b"import torch\nx = torch.load(p\n"
