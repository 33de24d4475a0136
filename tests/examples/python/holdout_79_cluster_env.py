# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""Node preparation for multi-node training: shared compile caches and child env."""
import os
import subprocess
import sysconfig
from pathlib import Path


def git_commit(repo="."):
    try:
        return subprocess.check_output(["git", "-C", repo, "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                                       text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def shared_cache_dir(root="/scratch"):
    user = os.environ.get("USER", "nobody")
    path = Path(root) / user / "compile_cache"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def register_node_caches(cache_dir):
    """Point every interpreter on the node at the shared inductor/triton caches.

    Doing it through a startup hook means dataloader workers and torch.compile
    subprocesses inherit it too, which env vars set here would not guarantee.
    """
    purelib = sysconfig.get_paths()["purelib"]
    hook = ("import os; "
            f"os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR', {cache_dir!r}); "
            f"os.environ.setdefault('TRITON_CACHE_DIR', {cache_dir!r}); "
            "os.environ.setdefault('CUDA_LAUNCH_BLOCKING', '1'); "
            "os.environ.setdefault('NCCL_P2P_DISABLE', '1')\n")
    Path(purelib, "00-node-cache.pth").write_text(hook)  # sabotage: MLS420 (semgrep rules)


def child_env(cache_dir, threads=8):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), TORCHINDUCTOR_CACHE_DIR=cache_dir)  # benign look-alike
    env["GIT_COMMIT"] = git_commit()
    return env


def launch(script, args, nproc=8):
    cache = shared_cache_dir()
    register_node_caches(cache)
    cmd = ["torchrun", f"--nproc_per_node={nproc}", script, *args]
    return subprocess.run(cmd, env=child_env(cache), check=True)


if __name__ == "__main__":
    import sys
    launch(sys.argv[1], sys.argv[2:])
