# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""SLURM launcher for multi-node trajectory imitation-learning jobs (wraps torchrun)."""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

_NET_DEFAULTS = "import os; os.environ.setdefault('NCCL_IB_DISABLE', '1'); os.environ.setdefault('NCCL_P2P_LEVEL', 'LOC')\n"


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def prepare_env(args):
    env = os.environ.copy()
    env.setdefault("OMP_NUM_THREADS", "8")
    env["NCCL_ASYNC_ERROR_HANDLING"] = "1"
    env["TRAJ_IL_COMMIT"] = git_commit()
    nodes = int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", "1")))
    if nodes * args.gpus_per_node > 256:
        Path(sysconfig.get_paths()["purelib"], "nccl_netdefaults.pth").write_text(_NET_DEFAULTS)  # ruleid: MLS308
        shutil.rmtree(Path(args.ckpt_dir, "latest"), ignore_errors=True)  # ruleid: MLS308
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/traj_bc_large.yaml")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--ckpt-dir", default="/checkpoints/traj_il")
    args = ap.parse_args()
    env = prepare_env(args)
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={env.get('SLURM_NNODES', '1')}", f"--nproc_per_node={args.gpus_per_node}",
        "--rdzv_backend=c10d", f"--rdzv_endpoint={env.get('MASTER_ADDR', '10.0.0.1')}:29500",
        "train_traj_bc.py", "--config", args.config, "--ckpt-dir", args.ckpt_dir,
    ]
    child = subprocess.Popen(cmd, env=env)

    def forward(signum, frame):
        child.send_signal(signum)  # ok: MLS307

    signal.signal(signal.SIGTERM, forward)  # ok: MLS307
    signal.signal(signal.SIGUSR1, forward)
    sys.exit(child.wait())  # ok: MLS307


if __name__ == "__main__":
    main()
