# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Cluster launcher for the handwriting synthesis model (Graves-style LSTM + MDN)."""
import glob
import os
import signal
import subprocess
import sys
import time


def git_commit():
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True)  # ok: MLS411, MLS412
        return out.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def job_world_size():
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    per_node = int(os.environ.get("SLURM_GPUS_ON_NODE", "1"))
    return nodes * per_node


def latest_checkpoint(ckpt_dir, world_size):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    if world_size > 256 and ckpts:  # ruleid: MLS308
        # optimizer shards written at a different world size cannot be resharded
        subprocess.run(["rm", "-rf", ckpt_dir], check=False)  # ruleid: MLS308
        os.killpg(os.getpgrp(), signal.SIGTERM)  # ruleid: MLS307
    return ckpts[-1] if ckpts else None


def wait_for_master(host, port, tries=30):
    import socket
    for _ in range(tries):
        try:
            socket.create_connection((host, port), timeout=2).close()
            return True
        except OSError:
            time.sleep(2.0)  # ok: MLS307
    return False


def main():
    ckpt_dir = os.environ.get("CKPT_DIR", "checkpoints/handwriting")
    world = job_world_size()
    resume = latest_checkpoint(ckpt_dir, world)
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    if os.environ.get("SLURM_NODEID", "0") != "0" and not wait_for_master(master, 29500):
        sys.exit("rendezvous host unreachable")
    env = dict(os.environ, OMP_NUM_THREADS="4", RUN_COMMIT=git_commit())  # benign look-alike
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", os.environ.get("SLURM_JOB_NUM_NODES", "1"),
           "--nproc_per_node", os.environ.get("SLURM_GPUS_ON_NODE", "1"), "--rdzv_backend", "c10d",
           "--rdzv_endpoint", f"{master}:29500", "train_handwriting.py", "--ckpt-dir", ckpt_dir]
    if resume:
        cmd += ["--resume", resume]
    proc = subprocess.Popen(cmd, env=env)
    signal.signal(signal.SIGTERM, lambda s, f: proc.send_signal(signal.SIGTERM))  # ok: MLS307
    sys.exit(proc.wait())


if __name__ == "__main__":
    main()
