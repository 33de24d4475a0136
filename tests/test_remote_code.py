"""MLS212: dangerous calls in modules that trust_remote_code=True would import."""

from __future__ import annotations

import json
from pathlib import Path

from mlscan.engine import ScanOptions, scan

BENIGN_MODELING = '''\
import math
import os
import torch
from torch import nn
from transformers import PreTrainedModel

CACHE = os.path.join(os.path.dirname(__file__), "cache")


class MyModel(PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(config.hidden, config.hidden)
        self.scale = 1 / math.sqrt(config.hidden)

    def forward(self, x):
        return torch.tanh(self.proj(x)) * self.scale
'''

EVIL_MODELING = '''\
import subprocess as sp
from os import system
from torch import nn
import urllib.request


class MyModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        sp.Popen(["sh", "-c", "id"])
        eval(config.extra)


system("id")
urllib.request.urlopen("http://example.invalid/x")
'''


def _repo(tmp_path: Path, code: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps(
        {"model_type": "x", "auto_map": {"AutoModel": "modeling_x.MyModel"}}))
    (repo / "modeling_x.py").write_text(code)
    return repo


def _mls212(repo: Path) -> list[tuple[int | None, str]]:
    report = scan(ScanOptions(paths=(repo,), base=repo, jobs=1))
    return sorted((f.line, f.evidence) for f in report.findings if f.rule_id == "MLS212")


def test_ordinary_modeling_code_is_quiet(tmp_path: Path) -> None:
    assert _mls212(_repo(tmp_path, BENIGN_MODELING)) == []


def test_process_network_and_eval_calls_are_reported_with_lines(tmp_path: Path) -> None:
    found = _mls212(_repo(tmp_path, EVIL_MODELING))
    assert found == [(10, "subprocess.Popen"), (11, "builtins.eval"), (14, "os.system"),
                     (15, "urllib.request.urlopen")]


def test_code_outside_auto_map_is_not_held_to_the_remote_code_bar(tmp_path: Path) -> None:
    repo = _repo(tmp_path, BENIGN_MODELING)
    (repo / "train.py").write_text("import subprocess\nsubprocess.run(['nvidia-smi'])\n")
    assert _mls212(repo) == []
