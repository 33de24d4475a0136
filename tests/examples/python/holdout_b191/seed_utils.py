# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""Reproducibility helpers: global seeding, DataLoader worker seeding and generators."""
import os
import random

import numpy as np
import torch


def set_seed(seed, deterministic=False):
    os.environ["PYTHONHASHSEED"] = str(seed)  # benign look-alike
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


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


def rng_snapshot():
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(snapshot):
    random.setstate(snapshot["python"])
    np.random.set_state(snapshot["numpy"])
    torch.set_rng_state(snapshot["torch"])  # ok: MLS301
    if snapshot.get("cuda") is not None:
        torch.cuda.set_rng_state_all(snapshot["cuda"])
