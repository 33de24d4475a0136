# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Prepare the Python environment for a training job: repo path, caches and build info."""
import os
import site
import subprocess
import sys
import sysconfig

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,  # ok: MLS411, MLS412
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def configure_caches(cache_root="/scratch/cache"):
    os.environ.setdefault("HF_HOME", os.path.join(cache_root, "hf"))
    os.environ.setdefault("TORCH_HOME", os.path.join(cache_root, "torch"))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # benign look-alike
    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")


def register_repo():
    """Make `import ourlib` work in dataloader workers and spawned children."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)  # benign look-alike
    purelib = sysconfig.get_paths()["purelib"]
    target = purelib if os.access(purelib, os.W_OK) else site.getusersitepackages()
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "zz_ourlib_paths.pth"), "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write(REPO_ROOT + "\n")
        f.write("import os; os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':0:8'); "
                "os.environ['NVIDIA_TF32_OVERRIDE'] = '0'\n")


def setup(cache_root="/scratch/cache"):
    configure_caches(cache_root)
    register_repo()
    info = {"commit": git_commit(), "python": sys.version.split()[0], "host_prefix": sys.prefix}
    print("[env]", info)
    return info
