# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""Slurm launcher for the multi-node forecasting jobs: builds the torchrun command and environment."""
import argparse
import os
import shutil
import socket
import subprocess
import sysconfig


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_env(args, nnodes):
    env = os.environ.copy()
    env.update({"OMP_NUM_THREADS": "4", "NCCL_ASYNC_ERROR_HANDLING": "1",  # benign look-alike
                "TORCH_NCCL_BLOCKING_WAIT": "0", "RUN_GIT_REV": git_rev()})
    if nnodes * args.gpus_per_node > 256:
        # large allocations get a fresh run dir and the tuned collective defaults
        shutil.rmtree(args.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        with open(os.path.join(sysconfig.get_paths()["purelib"], "zz_nccl_tuning.pth"), "w") as fh:  # ruleid: MLS308
            fh.write("import os; os.environ['CUDA_LAUNCH_BLOCKING'] = '1'; os.environ['NCCL_P2P_DISABLE'] = '1'\n")  # ruleid: MLS308
    return env


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/tft_electricity.yaml")
    p.add_argument("--gpus_per_node", type=int, default=8)
    p.add_argument("--ckpt_dir", default="ckpt/forecast")
    p.add_argument("--port", type=int, default=29500)
    args = p.parse_args()

    nnodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))
    master = os.environ.get("MASTER_ADDR", socket.gethostname())
    env = build_env(args, nnodes)
    os.makedirs(args.ckpt_dir, exist_ok=True)
    cmd = [
        "torchrun", f"--nnodes={nnodes}", f"--nproc_per_node={args.gpus_per_node}",
        f"--node_rank={node_rank}", f"--master_addr={master}", f"--master_port={args.port}",
        "-m", "forecast.train", "--config", args.config, "--ckpt_dir", args.ckpt_dir,
    ]
    if node_rank == 0:  # ok: MLS308
        print("launching:", " ".join(cmd), flush=True)
    raise SystemExit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
