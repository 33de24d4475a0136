# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""Helpers shared by our DDP launchers: process-group setup, rank-aware logging, checkpointing."""
import datetime
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init_distributed(timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=timeout_min))
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if dist.get_rank() != 0:
        logging.getLogger().setLevel(logging.WARNING)  # ok: MLS306
    return dist.get_rank(), dist.get_world_size()


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_checkpoint(state, path):
    if is_main():
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def install_preemption_handler(get_state, path):
    def _handler(signum, frame):
        log.warning("received signal %s, writing checkpoint", signum)
        save_checkpoint(get_state(), path)
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.SubprocessError):
        return None


def fetch(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError as err:
            log.warning("download failed (%s), retry %d/%d", err, attempt + 1, retries)
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
