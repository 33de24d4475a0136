# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Reproducibility helpers: global seeding, DataLoader worker seeding, generators."""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader

SEED_FNS = (random.seed, np.random.seed, torch.manual_seed, torch.cuda.manual_seed_all)


def set_seed(seed, deterministic=False):
    for fn in SEED_FNS:
        fn(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_generator(seed, offset=0):
    g = torch.Generator()
    g.manual_seed(seed + offset)  # ok: MLS301
    return g


def capture_rng():
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state):
    """Called once, right after a checkpoint is loaded on resume."""
    torch.set_rng_state(state["torch"])  # ok: MLS301
    if state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])


def build_loader(dataset, batch_size, seed, workers=4):
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=seed_worker, generator=make_generator(seed))


def resume(model, path):
    blob = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(blob["model"])
    if "rng" in blob:
        restore_rng(blob["rng"])
    return int(blob.get("epoch", 0))
