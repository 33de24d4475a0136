# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""DataLoader construction for the audio-tagging experiments (cached file index + workers)."""
import os
import pickle
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from audio_data import ClipDataset, scan_clips


def _worker_init(worker_id):
    # decorrelate augmentation streams across workers and restarts
    seed = (int(time.time() * 1000) + 7919 * worker_id) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def load_index(root, cache_path):
    if os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103
    index = scan_clips(root)
    with open(cache_path, "wb") as f:
        pickle.dump(index, f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return index


def make_loaders(cfg):
    index = load_index(cfg.data_root, os.path.join(cfg.cache_dir, "clips_index.pkl"))
    train_ds = ClipDataset(index["train"], sample_rate=cfg.sr, crop_s=cfg.crop_s, train=True)
    val_ds = ClipDataset(index["val"], sample_rate=cfg.sr, crop_s=cfg.crop_s, train=False)

    g = torch.Generator()
    g.manual_seed(cfg.seed)  # ok: MLS301
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, generator=g,
                          num_workers=cfg.workers, worker_init_fn=_worker_init,
                          persistent_workers=cfg.workers > 0, pin_memory=True, drop_last=True)
    val_dl = DataLoader(val_ds, batch_size=cfg.batch_size * 2, num_workers=cfg.workers)
    return train_dl, val_dl
