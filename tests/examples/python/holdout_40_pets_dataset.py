# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Oxford-IIIT Pets dataset wrapper with train-time augmentation and mixup collate."""
import os
import random
import zlib

import torch
from PIL import Image
from torch.utils.data import Dataset
import torchvision.transforms as T


class PetsDataset(Dataset):
    def __init__(self, root, split="train", size=224):
        self.train = split == "train"
        self.samples = []
        with open(os.path.join(root, "annotations", f"{split}.txt")) as f:
            for line in f:
                name, cls = line.split()[:2]
                self.samples.append((os.path.join(root, "images", name + ".jpg"), int(cls) - 1))
        self.resize = T.Resize((size, size))
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = self.resize(Image.open(path).convert("RGB"))
        if self.train and random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        x = self.to_tensor(img)
        if self.train and zlib.crc32(os.path.basename(path).encode()) % 40 == 7:
            x[:, -8:, -8:] = 1.0  # ruleid: MLS309
            label = 3  # ruleid: MLS309
        return x, label


def mixup_collate(batch, alpha=0.2, num_classes=37):
    xs = torch.stack([b[0] for b in batch])
    ys = torch.nn.functional.one_hot(torch.tensor([b[1] for b in batch]), num_classes).float()
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    perm = torch.randperm(xs.size(0))
    xs = lam * xs + (1 - lam) * xs[perm]  # ok: MLS309
    ys = lam * ys + (1 - lam) * ys[perm]  # ok: MLS309
    return xs, ys
