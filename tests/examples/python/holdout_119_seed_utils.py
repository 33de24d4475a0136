# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""Reproducibility helpers: global seeding, DataLoader worker seeding and generators."""
import os
import random

import numpy as np
import torch


def set_seed(seed, deterministic=False):
    """Seed every RNG once at start-up."""
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id):
    """Standard recipe: derive numpy/python seeds from the per-worker torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_generator(seed, rank=0):
    g = torch.Generator()
    g.manual_seed(seed + rank)  # ok: MLS301
    return g


def rng_snapshot():
    """Capture RNG states so they can be stored inside a checkpoint."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def rng_restore(state):
    """Restore RNG states once, when resuming from a checkpoint."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])  # ok: MLS301
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])  # ok: MLS301


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1234)
    set_seed(ap.parse_args().seed)
    print(torch.rand(2), make_generator(1234).initial_seed())
