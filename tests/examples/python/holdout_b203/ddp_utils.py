# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""Small helpers shared by the distributed training entry points."""
import logging
import os
import random
import signal
import subprocess

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def setup_logging():
    level = logging.INFO if is_main() else logging.WARNING  # ok: MLS306
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,  # ok: MLS411, MLS412
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_checkpoint(state, path):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    if is_main():
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)  # ok: MLS308
        log.info("saved checkpoint to %s", path)


def install_preemption_handler(get_state, path):
    def _handler(signum, frame):
        log.warning("received signal %d, writing checkpoint before exit", signum)
        save_checkpoint(get_state(), path)
        raise SystemExit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
