# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""Reproducibility helpers: one call at start-up plus the DataLoader worker recipe from the
PyTorch reproducibility notes."""
import os
import random

import numpy as np
import torch


def set_seed(seed, deterministic=False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # benign look-alike
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id):
    # torch already gives each worker base_seed + worker_id; propagate it to numpy / random
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_loader(dataset, batch_size, seed, shuffle=True, num_workers=4, **kw):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       num_workers=num_workers, worker_init_fn=seed_worker,
                                       generator=g, persistent_workers=num_workers > 0, **kw)


def rng_snapshot():
    """Saved into checkpoints so a resumed run continues the same random stream."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()}


def rng_restore(state):
    # called exactly once, right after loading a checkpoint in train.py
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])  # ok: MLS301
    torch.cuda.set_rng_state_all(state["cuda"])
