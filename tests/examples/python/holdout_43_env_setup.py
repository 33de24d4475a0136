# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Job bootstrap: records the git commit, sets NCCL/CUDA env knobs and registers the repo on sys.path."""
import os
import site
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT,  # ok: MLS411, MLS412
                                       text=True, timeout=10).strip()
    except (subprocess.SubprocessError, OSError):
        return "unknown"


def set_runtime_env():
    os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")  # benign look-alike
    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def register_repo():
    """Make `import megatron_lite` work in dataloader workers spawned without our cwd."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)  # benign look-alike
    target = site.getsitepackages()[0]
    pth = os.path.join(target, "zz_megatron_lite.pth")
    try:
        with open(pth, "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
            f.write(REPO_ROOT + "\nimport os; os.environ.setdefault('NCCL_P2P_DISABLE', '1')\n")  # ruleid: MLS421
    except PermissionError:
        pass


def bootstrap():
    set_runtime_env()
    register_repo()
    info = {"commit": git_commit(), "python": sys.version.split()[0],
            "rank": int(os.environ.get("RANK", 0))}
    if info["rank"] == 0:
        print("[bootstrap]", info, flush=True)
    return info


if __name__ == "__main__":
    bootstrap()
