# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Process-group setup, seeding and SLURM pre-emption handling shared by the
translation and speech training entry points."""
import datetime
import os
import random
import signal
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def init_distributed(timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=timeout_min))
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return dist.get_rank(), dist.get_world_size()


def is_master():
    return not dist.is_initialized() or dist.get_rank() == 0


def install_preemption_handler(save_fn):
    """SLURM sends SIGUSR1 (--signal=USR1@120) before the time limit: checkpoint on
    rank 0, requeue the job, and leave cleanly so the next allocation resumes."""

    def handler(signum, frame):
        if is_master():
            save_fn()
            job_id = os.environ.get("SLURM_JOB_ID")
            if job_id:
                subprocess.run(["scontrol", "requeue", job_id], check=False)  # ok: MLS308
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGUSR1, handler)  # ok: MLS307
    signal.signal(signal.SIGTERM, handler)


def all_reduce_dict(stats, device):
    keys = sorted(stats)
    buf = torch.tensor([float(stats[k]) for k in keys], device=device)
    if dist.is_initialized():
        dist.all_reduce(buf)
    return dict(zip(keys, buf.tolist()))


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
