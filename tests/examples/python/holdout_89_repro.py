# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""Reproducibility and config/weight loading utilities."""
import os
import random

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import DataLoader

def set_seed(seed: int, deterministic: bool = False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)

def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)

def make_loader(ds, batch_size, seed, shuffle=True, workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, persistent_workers=workers > 0)

def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

def load_weights(path, device="cpu"):
    if path.endswith(".safetensors"):
        return load_file(path, device=device)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

def load_embeddings(path):
    arr = np.load(path, mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.from_numpy(np.ascontiguousarray(arr))
