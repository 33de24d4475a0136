# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Reproducibility helpers: global seeding, DataLoader worker seeding and run metadata."""
import os
import random
import subprocess

import numpy as np
import torch
from torch.utils.data import DataLoader


def set_seed(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_loader(dataset, batch_size, seed, shuffle=True, num_workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=g, persistent_workers=num_workers > 0)


def git_commit(short=True):
    cmd = ["git", "rev-parse", "--short" if short else "--verify", "HEAD"]
    try:
        return subprocess.check_output(cmd, text=True, stderr=subprocess.DEVNULL).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_pretrained(model, path, strict=True):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=strict)
    return missing, unexpected


def run_metadata(args):
    return {"commit": git_commit(), "seed": args.seed, "torch": torch.__version__,
            "host_gpus": torch.cuda.device_count(), "user_args": vars(args)}
