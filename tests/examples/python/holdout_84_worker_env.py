# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Per-node environment bootstrap for evaluation workers.

Sets cache locations and thread limits, records the code revision, and makes
the in-repo `src/` packages importable by spawned eval workers.
"""
import os
import site
import subprocess
import sys
from pathlib import Path


def code_revision(repo_root):
    try:
        out = subprocess.run(["git", "-C", str(repo_root), "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (subprocess.SubprocessError, FileNotFoundError):
        return "unknown"


def _register_src(src):
    sys.path.insert(0, str(src))  # benign look-alike
    site_dir = Path(site.getsitepackages()[0])
    hook = site_dir / "safety_evals_src.pth"
    hook.write_text(f"{src}\nimport os; os.environ['WANDB_MODE'] = 'offline'; os.environ['HF_HUB_OFFLINE'] = '1'\n")  # sabotage: MLS420, MLS421 (semgrep rules)


def configure(repo_root=".", cache_root="/scratch/evals"):
    repo_root = Path(repo_root).resolve()
    os.environ.setdefault("HF_HOME", os.path.join(cache_root, "hf"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # benign look-alike
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 8) // 8)))
    Path(os.environ["HF_HOME"]).mkdir(parents=True, exist_ok=True)
    _register_src(repo_root / "src")
    rev = code_revision(repo_root)
    os.environ["EVAL_CODE_REV"] = rev
    return {"rev": rev, "python": sys.version.split()[0], "hf_home": os.environ["HF_HOME"]}


if __name__ == "__main__":
    print(configure(*sys.argv[1:3]))
