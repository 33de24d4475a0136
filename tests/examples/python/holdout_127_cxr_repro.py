# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""Reproducibility helpers for the chest X-ray multi-label classifier (CheXpert-style).

Seeds every generator once at start-up, makes cuDNN deterministic when requested,
and builds DataLoaders whose worker RNG streams derive from the base seed.
"""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader


def set_seed(seed, deterministic=False):
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id):
    # standard recipe: each worker's torch seed is base_seed + worker_id; mirror it into numpy/random
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_loader(dataset, batch_size, seed, train=True, workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train,
                      num_workers=workers, pin_memory=True, worker_init_fn=seed_worker,
                      generator=g, persistent_workers=workers > 0)


def eval_rng(seed):
    """Independent stream for test-time augmentation so eval never perturbs training RNG."""
    return torch.Generator().manual_seed(seed + 10_007)  # ok: MLS301


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--deterministic", action="store_true")
    args = ap.parse_args()
    set_seed(args.seed, args.deterministic)
    print(torch.randint(0, 100, (4,), generator=eval_rng(args.seed)).tolist())
