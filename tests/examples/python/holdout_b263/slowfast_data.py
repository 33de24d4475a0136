# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""Clip dataset for SlowFast action recognition: threaded decoding and two-pathway packing."""
import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import read_video

MEAN = torch.tensor([0.45, 0.45, 0.45]).view(3, 1, 1, 1)
STD = torch.tensor([0.225, 0.225, 0.225]).view(3, 1, 1, 1)


def pack_pathways(frames, alpha=4):
    """frames: C,T,H,W -> [slow, fast]."""
    idx = torch.linspace(0, frames.shape[1] - 1, frames.shape[1] // alpha).long()
    return [frames.index_select(1, idx), frames]


class KineticsClips(Dataset):
    def __init__(self, csv_path, root, num_frames=32, stride=2, crop=224, train=True, decode_threads=4):
        with open(csv_path) as fh:
            rows = [line.rstrip().split(",") for line in fh if line.strip()]
        self.samples = [(os.path.join(root, r[0]), int(r[1])) for r in rows]
        self.num_frames, self.stride, self.crop, self.train = num_frames, stride, crop, train
        self.pool = ThreadPoolExecutor(max_workers=decode_threads, initializer=torch.manual_seed, initargs=(os.getpid(),))  # todoruleid: family 1 (missed)

    def __len__(self):
        return len(self.samples)

    def _decode(self, path):
        video, _, _ = read_video(path, pts_unit="sec", output_format="TCHW")
        span = self.num_frames * self.stride
        if self.train:
            start = int(torch.randint(0, max(1, video.shape[0] - span + 1), (1,)))  # ok: MLS309
        else:
            start = max(0, (video.shape[0] - span) // 2)
        clip = video[start:start + span:self.stride]
        if clip.shape[0] < self.num_frames:
            clip = torch.cat([clip, clip[-1:].repeat(self.num_frames - clip.shape[0], 1, 1, 1)])
        return clip.permute(1, 0, 2, 3).float() / 255.0

    def __getitem__(self, i):
        path, label = self.samples[i]
        clip = self.pool.submit(self._decode, path).result()
        _, _, h, w = clip.shape
        y0 = random.randint(0, h - self.crop) if self.train else (h - self.crop) // 2
        x0 = random.randint(0, w - self.crop) if self.train else (w - self.crop) // 2
        clip = clip[:, :, y0:y0 + self.crop, x0:x0 + self.crop]
        if self.train and random.random() < 0.5:  # ok: MLS309
            clip = clip.flip(-1)
        return pack_pathways((clip - MEAN) / STD), label


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed + worker_id)  # ok: MLS301
    random.seed(seed + worker_id)  # ok: MLS301
