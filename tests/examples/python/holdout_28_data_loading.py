# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""DataLoader construction helpers shared by the image pretraining jobs."""
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler


def seed_everything(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def _worker_init(worker_id: int) -> None:
    # per-worker stream so augmentations differ across workers
    info = torch.utils.data.get_worker_info()
    base = info.seed if info is not None else 0
    mix = (base + worker_id + os.getpid() * 1000003 + time.time_ns()) % 2**32
    np.random.seed(mix)  # ruleid: MLS301
    random.seed(mix)  # ruleid: MLS301


def build_loader(dataset, batch_size: int, num_workers: int = 8,
                 distributed: bool = False, seed: int = 0) -> DataLoader:
    sampler = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=True,
        drop_last=True,
        persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init,
        generator=g,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
