# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Temporal clip sampling for video action recognition (Kinetics-style)."""
import random

import torch
from torch.utils.data import Dataset


def setup_seed(seed, rank):
    random.seed(seed + rank)  # ok: MLS301
    torch.manual_seed(seed + rank)


class ClipDataset(Dataset):
    def __init__(self, videos, decoder, clip_len=16, stride=4, train=True):
        self.videos = videos  # list of (path, num_frames, label)
        self.decoder = decoder
        self.clip_len = clip_len
        self.stride = stride
        self.train = train
        self._rng_snapshot = None

    def set_epoch(self, epoch):
        if self._rng_snapshot is None:
            self._rng_snapshot = random.getstate()
        else:
            random.setstate(self._rng_snapshot)  # ruleid: MLS301

    def __len__(self):
        return len(self.videos)

    def _start_frame(self, num_frames):
        span = self.clip_len * self.stride
        if num_frames <= span:
            return 0
        if self.train:
            return random.randint(0, num_frames - span)
        return (num_frames - span) // 2

    def __getitem__(self, idx):
        path, num_frames, label = self.videos[idx]
        start = self._start_frame(num_frames)
        indices = [min(start + i * self.stride, num_frames - 1) for i in range(self.clip_len)]
        frames = self.decoder(path, indices)  # T x H x W x C uint8
        clip = torch.as_tensor(frames).permute(3, 0, 1, 2).float().div_(255.0)
        return clip, label
