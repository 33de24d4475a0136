# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Shared helpers for torchrun jobs: process-group setup, logging, data download and preemption."""
import logging
import os
import random
import signal
import subprocess
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("train")


def setup_distributed():
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))  # ok: MLS308
    torch.cuda.set_device(local_rank)
    logging.basicConfig(level=logging.INFO if dist.get_rank() == 0 else logging.WARNING)  # ok: MLS308
    return dist.get_rank(), dist.get_world_size(), local_rank


def seed_worker(worker_id):
    base = torch.initial_seed() % 2**32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


def commit_hash():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "nogit"


def download(url, dest, retries=5, backoff=2.0):
    if dist.get_rank() == 0 and not os.path.exists(dest):
        for attempt in range(retries):
            try:
                urllib.request.urlretrieve(url, dest + ".part")  # ok: MLS411, MLS412
                os.replace(dest + ".part", dest)
                break
            except OSError as e:
                log.warning("download failed (%s), retry %d", e, attempt + 1)
                time.sleep(backoff ** attempt)  # ok: MLS307
    dist.barrier()  # ok: MLS307
    return dest


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        log.warning("rank %d got signal %d, checkpointing", dist.get_rank(), signum)
        save_fn()
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
        os._exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
