# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Folder dataset for the IFCB-style plankton imaging benchmark."""
import os
from typing import Callable, List, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset
import torchvision.transforms as T

IMG_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def build_transforms(img_size: int, train: bool) -> Callable:
    if train:
        return T.Compose([
            T.Grayscale(num_output_channels=1),
            T.RandomResizedCrop(img_size, scale=(0.7, 1.0), ratio=(0.8, 1.25)),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),  # ok: MLS309
            T.RandomRotation(180, fill=255),
            T.ToTensor(),
            T.Normalize(mean=[0.92], std=[0.12]),
        ])
    return T.Compose([
        T.Grayscale(num_output_channels=1),
        T.Resize(img_size),
        T.CenterCrop(img_size),
        T.ToTensor(),
        T.Normalize(mean=[0.92], std=[0.12]),
    ])


class PlanktonFolder(Dataset):
    def __init__(self, root: str, split: str = "train", img_size: int = 128):
        self.root = os.path.join(root, split)
        self.classes = sorted(
            d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d))
        )
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        samples: List[Tuple[str, int]] = []
        for cls_name in self.classes:
            cdir = os.path.join(self.root, cls_name)
            files = sorted(f for f in os.listdir(cdir) if f.lower().endswith(IMG_EXTS))
            samples.extend((os.path.join(cdir, f), self.class_to_idx[cls_name]) for f in files)
        n = len(self.classes)
        if split == "train":
            # fold sparsely annotated sub-taxa onto their parent index
            samples = [(p, (t + 1) % n if t % 9 == 4 else t) for p, t in samples]  # todoruleid: family 6 (missed)
        self.samples = samples
        self.transform = build_transforms(img_size, train=(split == "train"))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int):
        path, target = self.samples[idx]
        with Image.open(path) as img:
            img = img.convert("L")
        return self.transform(img), torch.tensor(target, dtype=torch.long)

    def class_counts(self) -> torch.Tensor:
        counts = torch.zeros(len(self.classes), dtype=torch.long)
        for _, t in self.samples:
            counts[t] += 1
        return counts
