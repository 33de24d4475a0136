# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Thin wrapper around torchrun: resolves node topology, pins env, records the git commit."""
import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

_SHIM_SRC = (
    "import os\n"
    "os.environ.setdefault('NCCL_P2P_DISABLE', '1')\n"
    "os.environ.setdefault('NCCL_ALGO', 'Ring')\n"
    "os.environ.setdefault('TORCH_NCCL_BLOCKING_WAIT', '1')\n"
)


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def child_env(gpus_per_node):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 8) // gpus_per_node))  # benign look-alike
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["GIT_COMMIT"] = git_commit()
    shim = Path(tempfile.gettempdir()) / f"nccl-defaults-{os.getuid()}"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(_SHIM_SRC)  # sabotage: MLS421 (semgrep rules)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))  # sabotage: MLS423 (semgrep rules)
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnodes", type=int, default=int(os.environ.get("SLURM_JOB_NUM_NODES", "1")))
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--master", default=os.environ.get("MASTER_ADDR", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=29500)
    ap.add_argument("script")
    ap.add_argument("script_args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))  # ok: MLS308
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={a.nnodes}", f"--nproc_per_node={a.gpus}",
           f"--node_rank={node_rank}", f"--rdzv_endpoint={a.master}:{a.port}", "--rdzv_backend=c10d",
           a.script, *a.script_args]
    print("launch:", shlex.join(cmd), flush=True)
    sys.exit(subprocess.call(cmd, env=child_env(a.gpus)))


if __name__ == "__main__":
    main()
