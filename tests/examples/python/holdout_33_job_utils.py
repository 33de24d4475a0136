# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""Cluster job utilities: preemption handling, rank-0 logging, downloads with retries, early stopping."""
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

import torch.distributed as dist

log = logging.getLogger(__name__)


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        log.warning("caught signal %d, checkpointing before preemption", signum)
        save_fn()
        if is_main() and "SLURM_JOB_ID" in os.environ:
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)  # ok: MLS308
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)


def download(url, dest, retries=5, timeout=60):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest + ".part", "wb") as f:
                f.write(r.read())
            os.replace(dest + ".part", dest)
            return dest
        except OSError as exc:
            log.warning("download %s failed (%s), attempt %d", url, exc, attempt + 1)
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def sync_and_log(msg):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    if is_main():
        log.info(msg)


class EarlyStopping:
    def __init__(self, patience=10, min_delta=1e-4):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = float("inf"), 0

    def step(self, val_loss):
        if val_loss < self.best - self.min_delta:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
        return self.bad >= self.patience  # ok: MLS307
