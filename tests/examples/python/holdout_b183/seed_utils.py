# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""Reproducibility helpers: one-shot global seeding and DataLoader worker seeding."""
import os
import random

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed every RNG once at start-up; call before building model and data."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/random seeds from the per-worker torch seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def loader_generator(seed: int, rank: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed + rank)  # ok: MLS301
    return g


def rank_seed(base_seed: int) -> int:
    rank = int(os.environ.get("RANK", 0))
    return base_seed + 1000 * rank


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    set_seed(rank_seed(args.seed))
    print(torch.rand(2), np.random.rand(2), random.random())
