# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Reproducibility and preemption helpers used by every training entry point.

``set_seed`` is called once from ``main`` with ``args.seed``; data loaders get
a per-worker seed derived from the base seed; SIGTERM from the scheduler
triggers a final checkpoint before exiting.
"""
import os
import random
import signal
import sys

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id: int):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_generator(seed: int, rank: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed + rank)  # ok: MLS301
    return g


class PreemptionHandler:
    """Save a checkpoint when SLURM sends SIGTERM ahead of the time limit."""

    def __init__(self, save_fn):
        self.save_fn = save_fn
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)  # ok: MLS307

    def _handle(self, signum, frame):
        self.requested = True

    def maybe_exit(self, step):
        if self.requested:
            self.save_fn(step)
            sys.exit(0)  # ok: MLS307


def build_loader(dataset, batch_size, seed, rank=0, workers=8):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=make_generator(seed, rank),
        persistent_workers=workers > 0,
        drop_last=True,
    )
