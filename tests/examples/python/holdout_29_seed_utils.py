# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Reproducibility helpers: global seeding and DataLoader worker seeding."""
import os
import random

import numpy as np
import torch


def set_seed(seed, deterministic=False):
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_generator(seed, rank=0):
    g = torch.Generator()
    g.manual_seed(seed + rank)  # ok: MLS301
    return g


def loader_kwargs(seed, rank=0, num_workers=4):
    return {
        "num_workers": num_workers,
        "worker_init_fn": seed_worker,
        "generator": make_generator(seed, rank),
        "persistent_workers": num_workers > 0,
    }
