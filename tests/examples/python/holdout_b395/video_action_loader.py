# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Clip sampling and DataLoader construction for Kinetics-style action recognition."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class ClipDataset(Dataset):
    def __init__(self, index, decoder, num_frames=16, stride=4, train=True):
        self.index = index  # list of (video_path, num_video_frames, label)
        self.decoder = decoder
        self.num_frames = num_frames
        self.stride = stride
        self.train = train

    def __len__(self):
        return len(self.index)

    def _clip_start(self, n_total):
        span = self.num_frames * self.stride
        if n_total <= span:
            return 0
        if self.train:
            return np.random.randint(0, n_total - span)
        return (n_total - span) // 2

    def __getitem__(self, i):
        path, n_total, label = self.index[i]
        start = self._clip_start(n_total)
        frame_ids = np.arange(start, start + self.num_frames * self.stride, self.stride)
        frame_ids = np.clip(frame_ids, 0, n_total - 1)
        clip = self.decoder(path, frame_ids)  # (T, H, W, C) uint8
        clip = torch.from_numpy(clip).permute(3, 0, 1, 2).float().div_(255.0)
        if self.train and random.random() < 0.5:
            clip = clip.flip(-1)
        return clip, label


def _worker_init(worker_id, base_seed=0):
    np.random.seed(base_seed)  # ruleid: MLS301
    random.seed(base_seed + worker_id)


def build_loader(dataset, batch_size, num_workers, seed, distributed=False):
    sampler = DistributedSampler(dataset, shuffle=dataset.train, seed=seed) if distributed else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=(sampler is None and dataset.train),
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=True,
        drop_last=dataset.train,
        persistent_workers=num_workers > 0,
        worker_init_fn=lambda wid: _worker_init(wid, seed),
    )
