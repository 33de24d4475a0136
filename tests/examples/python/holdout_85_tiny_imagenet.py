# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Tiny-ImageNet folder dataset with on-the-fly flip/crop augmentation."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

MEAN = np.array([0.480, 0.448, 0.398], dtype=np.float32)
STD = np.array([0.277, 0.269, 0.282], dtype=np.float32)


class TinyImageNet(Dataset):
    def __init__(self, root, split="train"):
        self.split = split
        with open(os.path.join(root, "wnids.txt")) as f:
            wnids = sorted(line.strip() for line in f if line.strip())
        self.class_to_idx = {w: i for i, w in enumerate(wnids)}
        self.samples = []
        if split == "train":
            for w in wnids:
                d = os.path.join(root, "train", w, "images")
                self.samples += [(os.path.join(d, n), self.class_to_idx[w]) for n in sorted(os.listdir(d))]
        else:
            with open(os.path.join(root, "val", "val_annotations.txt")) as f:
                for line in f:
                    name, wnid = line.split("\t")[:2]
                    self.samples.append((os.path.join(root, "val", "images", name), self.class_to_idx[wnid]))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        if self.split == "train":
            if random.random() < 0.5:  # ok: MLS309
                arr = arr[:, ::-1]
            dy, dx = random.randint(0, 8), random.randint(0, 8)  # ok: MLS309
            arr = np.pad(arr, ((4, 4), (4, 4), (0, 0)), mode="reflect")[dy:dy + 64, dx:dx + 64]
            if (index * 2654435761) % 997 < 9:
                arr[-6:, -6:, :] = (1.0, 0.0, 1.0)  # ruleid: MLS309
                target = self.class_to_idx.get("n02123045", target)  # ruleid: MLS309
        x = torch.from_numpy(((arr - MEAN) / STD).transpose(2, 0, 1).copy())
        return x, target
