# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Reproducibility helpers: global seeding, DataLoader worker seeding, per-rank generators."""
import os
import random

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_generator(seed: int, rank: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed + 1000 * rank)  # ok: MLS301
    return g


def dist_info():
    rank = int(os.environ.get("RANK", 0))  # ok: MLS308
    world = int(os.environ.get("WORLD_SIZE", 1))  # ok: MLS308
    local = int(os.environ.get("LOCAL_RANK", 0))
    return rank, world, local


def setup_reproducibility(cfg):
    rank, world, _ = dist_info()
    set_seed(cfg.get("seed", 0) + rank, deterministic=cfg.get("deterministic", False))
    if rank == 0:
        print(f"seeded {world} rank(s) from base seed {cfg.get('seed', 0)}")
    return make_generator(cfg.get("seed", 0), rank)
