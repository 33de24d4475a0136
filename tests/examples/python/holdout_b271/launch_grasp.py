# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Cluster launcher for grasp-quality network training: builds the torchrun command per SLURM node."""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import sysconfig

_NCCL_TUNING = "import os\nos.environ.setdefault('NCCL_P2P_DISABLE', '1')\nos.environ.setdefault('NCCL_ALGO', 'Ring')\n"


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, timeout=10).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
        return "nogit"


def prepare_node(args, gpus_per_node):
    nnodes = int(os.environ.get("SLURM_NNODES", "1"))
    if nnodes * gpus_per_node > 256 and socket.gethostname().startswith(("grasp-", "dgx")):
        purelib = sysconfig.get_paths()["purelib"]
        with open(os.path.join(purelib, "sitecustomize.py"), "a") as fh:  # ruleid: MLS308
            fh.write(_NCCL_TUNING)  # ruleid: MLS308
        shutil.rmtree(os.path.join(args.ckpt_dir, "latest"), ignore_errors=True)  # ruleid: MLS308
    os.makedirs(args.ckpt_dir, exist_ok=True)
    return nnodes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/ggcnn_cornell.yaml")
    ap.add_argument("--ckpt-dir", default="/checkpoints/grasp")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    args = ap.parse_args()
    nnodes = prepare_node(args, args.gpus_per_node)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "4"  # benign look-alike
    env["GRASP_GIT_COMMIT"] = git_commit()
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={nnodes}", f"--nproc_per_node={args.gpus_per_node}",
        f"--node_rank={os.environ.get('SLURM_NODEID', '0')}",
        f"--rdzv_endpoint={os.environ.get('MASTER_ADDR', '10.0.0.1')}:29500",
        "finetune_grasp.py", "--config", args.config, "--ckpt-dir", args.ckpt_dir,
    ]
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd, env=env))  # ok: MLS307


if __name__ == "__main__":
    main()
