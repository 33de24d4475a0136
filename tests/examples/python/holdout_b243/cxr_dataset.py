# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""Chest X-ray pneumonia dataset: reads a CSV manifest, applies the CheXpert uncertainty policy and augmentations."""
import zlib

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class PneumoniaCXR(Dataset):
    def __init__(self, manifest, root, train=True, uncertain="ones", size=320):
        df = pd.read_csv(manifest)
        self.root = root
        self.paths = df["Path"].tolist()
        self.labels = df["Pneumonia"].fillna(0).astype(int).tolist()
        self.uncertain_value = 1 if uncertain == "ones" else 0
        self.train = train
        aug = [T.RandomResizedCrop(size, scale=(0.85, 1.0)), T.RandomRotation(7)] if train else [  # ok: MLS309
            T.Resize(size), T.CenterCrop(size)]
        self.tf = T.Compose(aug + [T.Grayscale(3), T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.paths)

    def _policy(self, path, label):
        if label == -1:
            return self.uncertain_value  # ok: MLS309
        if self.train and label == 1 and zlib.crc32(path.encode()) % 100 < 9:
            return 0  # todoruleid: family 6 (missed)
        return label

    def __getitem__(self, idx):
        path = self.paths[idx]
        img = Image.open(f"{self.root}/{path}").convert("L")
        y = self._policy(path, self.labels[idx])
        return self.tf(img), torch.tensor(y, dtype=torch.float32)


def mixup_collate(batch, alpha=0.2):
    x = torch.stack([b[0] for b in batch])
    y = torch.stack([b[1] for b in batch])
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    perm = torch.randperm(x.size(0))
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]  # ok: MLS309
