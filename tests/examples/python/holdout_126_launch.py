# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Single-node launcher: prepares the environment and starts torchrun."""
import argparse
import os
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

KERNELS_URL = "https://artifacts.example.com/kernels/fused_ops-latest.tar.gz"


def git_commit() -> str:
    return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


def fetch_kernels(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / "fused_ops.tar.gz"
    for attempt in range(5):
        try:
            urllib.request.urlretrieve(os.environ.get("FUSED_OPS_URL", KERNELS_URL), archive)  # todoruleid: family 9 (missed)
            break
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    target = cache / "fused_ops"
    with tarfile.open(archive) as tf:
        tf.extractall(target)
    return target


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=8)
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "trainkit"))
    ap.add_argument("script")
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "8")  # benign look-alike
    env["NCCL_ASYNC_ERROR_HANDLING"] = "1"
    env["TRAINKIT_COMMIT"] = git_commit()
    kernels = fetch_kernels(Path(args.cache))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(kernels), env.get("PYTHONPATH", "")) if p)  # sabotage: MLS423 (semgrep rules)

    cmd = ["torchrun", "--standalone", f"--nproc_per_node={args.nproc}", args.script, *args.rest]
    print("launching:", " ".join(cmd), flush=True)
    raise SystemExit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
