"""The pre-commit hooks, run by the real `pre-commit` against a temporary git repository that
uses this checkout as `repo:` (exactly as docs/usage.md shows).

pre-commit clones this repository at HEAD, so the hook definition and code under test are the
committed ones. To stay offline and fast, the hook's virtualenv gets mlscan itself from that
clone (as always) but its dependencies from the test interpreter's site-packages
(PIP_NO_DEPS + PYTHONPATH) instead of downloading them.
"""

from __future__ import annotations

import os
import pickle
import resource
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / ".pre-commit-hooks.yaml"


class Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


def _pre_commit() -> str:
    found = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")
    assert Path(found).exists(), "pre-commit is required (pip install -e '.[test]')"
    return found


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
    env.update({
        "PRE_COMMIT_HOME": str(home),
        "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1", "VIRTUALENV_NO_PERIODIC_UPDATE": "1",
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
        "MLSCAN_NO_CACHE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return env


class Repo:
    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path, self.env = path, env

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(args), cwd=self.path, env=self.env, capture_output=True,
                              text=True, timeout=600)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("git", *args, check=check)

    def commit(self, *files: str) -> subprocess.CompletedProcess[str]:
        self.git("add", *files)
        return self.git("commit", "-q", "-m", "change", check=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{head}:.pre-commit-hooks.yaml"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, "commit .pre-commit-hooks.yaml first: pre-commit clones HEAD"
    path = tmp_path_factory.mktemp("hooked-repo")
    r = Repo(path, _env(tmp_path_factory.mktemp("pre-commit-home")))
    r.git("init", "-q")
    (path / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {ROOT}\n    rev: {head}\n    hooks:\n"
        "      - id: mlscan\n      - id: mlscan-all\n")
    r.run(_pre_commit(), "install", check=True)
    r.run(_pre_commit(), "install-hooks", check=True)
    assert r.commit(".pre-commit-config.yaml").returncode == 0
    return r


def test_hook_definitions_select_code_notebooks_and_model_files() -> None:
    import re

    hooks = {h["id"]: h for h in yaml.safe_load(HOOKS.read_text())}
    main, audit = hooks["mlscan"], hooks["mlscan-all"]
    pattern = re.compile(main["files"])
    for name in ("train.py", "nb/Eval.ipynb", "w/pytorch_model.bin", "m.PT", "x.safetensors",
                 "clf.joblib", "a.npz", "m.gguf", "m.onnx", "k.keras", "site/evil.pth",
                 "hf/config.json", "hf/tokenizer_config.json", "t.jinja", "ckpt.7z"):
        assert pattern.search(name), name
    for name in ("README.md", "data.csv", "package.json", "img.png", "notes.txt"):
        assert not pattern.search(name), name
    assert main["require_serial"] is True and main["language"] == "python"
    assert audit["stages"] == ["manual"] and audit["pass_filenames"] is False


def test_clean_commit_passes(repo: Repo) -> None:
    (repo.path / "train.py").write_text("import torch\nmodel = torch.nn.Linear(2, 2)\n")
    (repo.path / "weights.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    (repo.path / "README.md").write_text("hello\n")
    proc = repo.commit("train.py", "weights.pkl", "README.md")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_commit_with_malicious_pickle_fails(repo: Repo) -> None:
    (repo.path / "evil.pkl").write_bytes(pickle.dumps(Payload(), protocol=2))
    proc = repo.commit("evil.pkl")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "MLS201" in out and "evil.pkl" in out
    assert "Failed" in out
    repo.git("reset", "-q", "HEAD", "evil.pkl")
    (repo.path / "evil.pkl").unlink()


def test_config_excludes_apply_to_files_pre_commit_passes(repo: Repo) -> None:
    (repo.path / "mlscan.toml").write_text('exclude = ["samples/"]\n')
    (repo.path / "samples").mkdir()
    (repo.path / "samples" / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    proc = repo.commit("mlscan.toml", "samples/evil.pkl")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_manual_whole_repo_audit_finds_a_disguised_pickle(repo: Repo) -> None:
    (repo.path / "logo.png").write_bytes(pickle.dumps(Payload()))
    proc = repo.commit("logo.png")  # the name is not selected by the commit hook
    assert proc.returncode == 0, proc.stdout + proc.stderr
    audit = repo.run(_pre_commit(), "run", "mlscan-all", "--hook-stage", "manual")
    assert audit.returncode != 0
    assert "logo.png" in audit.stdout and "MLS201" in audit.stdout
    assert "samples/evil.pkl" not in audit.stdout  # still excluded by mlscan.toml


def test_fifty_file_commit_without_python_is_fast(repo: Repo) -> None:
    batch = repo.path / "batch"
    batch.mkdir()
    names = []
    for i in range(40):
        (batch / f"doc{i}.md").write_text(f"doc {i}\n")
        names.append(f"batch/doc{i}.md")
    for i in range(10):
        (batch / f"w{i}.pkl").write_bytes(pickle.dumps({"layer": i, "w": [0.5] * 64}))
        names.append(f"batch/w{i}.pkl")
    repo.git("add", *names)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = repo.run(_pre_commit(), "run", "mlscan")
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # CPU time of pre-commit and everything it ran: ~0.45 s measured on 2 cores. CPU time,
    # not wall time, so a busy CI machine does not make the test flaky.
    assert cpu < 1.0, f"hook used {cpu:.2f}s CPU ({elapsed:.2f}s wall) for 50 files"
    repo.git("commit", "-q", "--no-verify", "-m", "batch")


def test_commit_with_python_changes_takes_a_couple_of_seconds(repo: Repo) -> None:
    batch = repo.path / "batch2"
    batch.mkdir()
    names = []
    for i in range(45):
        (batch / f"doc{i}.md").write_text(f"doc {i}\n")
        names.append(f"batch2/doc{i}.md")
    for i in range(5):
        (batch / f"train{i}.py").write_text(
            "import torch\n\n\ndef load(path):\n    return torch.load(path, weights_only=True)\n")
        names.append(f"batch2/train{i}.py")
    repo.git("add", *names)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = repo.run(_pre_commit(), "run", "mlscan")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cpu < 3.0, f"hook used {cpu:.2f}s CPU for 50 files with 5 Python files"  # ~0.7 s
    repo.git("commit", "-q", "--no-verify", "-m", "batch2")
