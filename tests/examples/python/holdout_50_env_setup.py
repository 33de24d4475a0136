# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Prepare the runtime environment before launching training on a fresh node."""
import os
import site
import subprocess
import sys

CACHE_ROOT = os.environ.get("SCRATCH", "/tmp") + "/ml_cache"


def configure_env():
    os.environ.setdefault("HF_HOME", os.path.join(CACHE_ROOT, "hf"))
    os.environ.setdefault("TORCH_HOME", os.path.join(CACHE_ROOT, "torch"))
    os.environ["NCCL_ASYNC_ERROR_HANDLING"] = "1"  # benign look-alike
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.makedirs(os.environ["HF_HOME"], exist_ok=True)


def install_requirements(req="requirements.txt"):
    if os.path.exists(req):
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-r", req])  # benign look-alike


def register_project_path():
    """Make the repo importable from notebooks and child processes."""
    repo = os.path.dirname(os.path.abspath(__file__))
    target = site.getsitepackages()[0]
    with open(os.path.join(target, "zz_project_paths.pth"), "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write(repo + "\n")
        f.write("import os; os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':0:8')\n")


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                                       text=True).strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


if __name__ == "__main__":
    configure_env()
    install_requirements()
    register_project_path()
    print("environment ready, commit", git_commit())
