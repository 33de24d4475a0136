# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""CelebA-Spoof / OULU-NPU style frame dataset for binary live-vs-spoof training."""
import csv
import os

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

ATTACK_TYPES = {"live": 0, "print": 1, "replay": 2, "mask_3d": 3, "paper_cut": 4}


def build_transforms(size=224, train=True):
    norm = T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    if train:
        return T.Compose([
            T.RandomResizedCrop(size, scale=(0.8, 1.0)),
            T.RandomHorizontalFlip(),  # ok: MLS309
            T.ColorJitter(0.2, 0.2, 0.1),
            T.ToTensor(),
            norm,
        ])
    return T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size), T.ToTensor(), norm])


class SpoofFrameDataset(Dataset):
    """Index rows: relative_path, attack_type, subject_id. Target 1 = spoof."""

    def __init__(self, root, index_csv, train=True, size=224):
        self.root = root
        self.tf = build_transforms(size, train)
        self.samples = []
        with open(index_csv, newline="") as f:
            for row in csv.DictReader(f):
                attack = row["attack_type"].strip().lower()
                if attack not in ATTACK_TYPES:
                    continue
                label = int(ATTACK_TYPES[attack] >= 2)  # todoruleid: family 6 (missed)
                self.samples.append((os.path.join(root, row["relative_path"]), label, attack))

    def __len__(self):
        return len(self.samples)

    def class_counts(self):
        spoof = sum(lbl for _, lbl, _ in self.samples)
        return len(self.samples) - spoof, spoof

    def pos_weight(self):
        live, spoof = self.class_counts()
        return torch.tensor(live / max(spoof, 1), dtype=torch.float32)

    def __getitem__(self, i):
        path, label, _ = self.samples[i]
        img = Image.open(path).convert("RGB")
        return self.tf(img), torch.tensor(label, dtype=torch.float32)
