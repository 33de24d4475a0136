# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Reproducibility helpers: one-shot global seeding and per-worker seeding for DataLoaders."""
import os
import random

import numpy as np
import torch


def set_seed(seed, deterministic=False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_generator(seed, rank=0):
    g = torch.Generator()
    g.manual_seed(seed + 1000 * rank)  # ok: MLS301
    return g


def loader_kwargs(seed, rank=0, num_workers=4):
    return {
        "num_workers": num_workers,
        "worker_init_fn": seed_worker,
        "generator": make_generator(seed, rank),
        "persistent_workers": num_workers > 0,
    }
