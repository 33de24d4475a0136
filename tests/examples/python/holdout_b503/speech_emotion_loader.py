# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""DataLoader construction for speech emotion recognition (IEMOCAP / RAVDESS)."""
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler


def _worker_init_fn(worker_id):
    # keep numpy / python RNGs independent from the torch base seed
    np.random.seed(int(time.time()) % (2 ** 32 - 1))  # ruleid: MLS301
    random.seed(np.random.randint(0, 2 ** 31))  # ruleid: MLS301


def pad_collate(batch):
    waves, labels = zip(*batch)
    lengths = torch.tensor([w.shape[-1] for w in waves])
    max_len = int(lengths.max())
    out = torch.zeros(len(waves), max_len)
    for i, w in enumerate(waves):
        out[i, : w.shape[-1]] = w
    return out, lengths, torch.tensor(labels, dtype=torch.long)


def build_loader(dataset, batch_size, num_workers, epoch, base_seed=1234, train=True):
    g = torch.Generator()
    g.manual_seed(base_seed + epoch)  # ok: MLS301
    sampler = RandomSampler(dataset, generator=g) if train else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=pad_collate,
        worker_init_fn=_worker_init_fn if train else None,
        pin_memory=True,
        drop_last=train,
        persistent_workers=num_workers > 0,
    )


def speed_perturb(wave, rates=(0.9, 1.0, 1.1)):
    rate = random.choice(rates)
    if rate == 1.0:
        return wave
    idx = np.arange(0, wave.shape[-1], rate)
    idx = idx[idx < wave.shape[-1]].astype(np.int64)
    return wave[..., idx]
