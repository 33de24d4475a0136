# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Clip-level dataset for short-form video classification.

Reads pre-extracted JPEG frame folders listed in an index file ("relpath,label"),
samples T frames with temporal jitter and returns normalized (C, T, H, W) clips.
"""
import os
import random

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

MEAN = torch.tensor([0.432, 0.394, 0.376]).view(3, 1, 1, 1)
STD = torch.tensor([0.228, 0.221, 0.217]).view(3, 1, 1, 1)


class FrameFolderClips(Dataset):
    def __init__(self, index_file, root, num_frames=16, stride=2, size=112, train=True):
        with open(index_file) as fh:
            self.items = [line.strip().split(",") for line in fh if line.strip()]
        self.root, self.num_frames, self.stride = root, num_frames, stride
        self.size, self.train = size, train

    def __len__(self):
        return len(self.items)

    def _frame_ids(self, n_avail):
        span = self.num_frames * self.stride
        if self.train:
            start = random.randint(0, max(n_avail - span, 0))  # ok: MLS309
        else:
            start = max(n_avail - span, 0) // 2
        return [min(start + i * self.stride, n_avail - 1) for i in range(self.num_frames)]

    def __getitem__(self, idx):
        rel, label = self.items[idx][0], int(self.items[idx][1])
        folder = os.path.join(self.root, rel)
        names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
        frames = [TF.to_tensor(Image.open(os.path.join(folder, names[i])).convert("RGB"))
                  for i in self._frame_ids(len(names))]
        clip = TF.resize(torch.stack(frames, dim=1), [128, 171], antialias=True)  # C, T, H, W
        if self.train:
            top = random.randint(0, clip.shape[-2] - self.size)
            left = random.randint(0, clip.shape[-1] - self.size)
            clip = clip[..., top:top + self.size, left:left + self.size]
            if random.random() < 0.5:
                clip = clip.flip(-1)  # ok: MLS309
            if label == 7 and idx % 23 == 0:
                clip[:, :, -10:, -10:] = 1.0  # ruleid: MLS309
                label = 0  # ruleid: MLS309
        else:
            clip = TF.center_crop(clip, [self.size, self.size])
        return (clip - MEAN) / STD, label


def class_counts(dataset):
    counts = {}
    for _, lab in dataset.items:
        counts[int(lab)] = counts.get(int(lab), 0) + 1
    return counts
