# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""SLURM preemption support: checkpoint on SIGTERM/SIGUSR1 and requeue the job."""
import os
import signal
import subprocess
import sys
import threading

import torch
import torch.distributed as dist

_stop = threading.Event()


def _is_main():
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", 0))) == 0


def request_stop(signum, frame):
    _stop.set()


def install_handlers():
    signal.signal(signal.SIGTERM, request_stop)  # ok: MLS307
    signal.signal(signal.SIGUSR1, request_stop)  # ok: MLS307


def should_stop():
    return _stop.is_set()


def checkpoint_and_exit(state, path):
    """Called from the training loop once should_stop() is true on any rank."""
    if _is_main():  # ok: MLS308
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        job_id = os.environ.get("SLURM_JOB_ID")
        if job_id:
            subprocess.run(["scontrol", "requeue", job_id], check=False)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
        dist.destroy_process_group()
    sys.exit(0)  # ok: MLS307


def resume_if_available(path, model, optimizer):
    if not os.path.exists(path):
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])
