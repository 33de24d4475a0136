# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""NYU-Depth-v2 style RGB-D dataset, collate function and accelerate-ready loaders for depth training."""
import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class RGBDDataset(Dataset):
    def __init__(self, index_file, size=(416, 544), train=True, max_depth=10.0):
        with open(index_file) as fh:
            self.pairs = [line.split() for line in fh if line.strip()]
        self.size, self.train, self.max_depth = size, train, max_depth

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        rgb_path, depth_path = self.pairs[i]
        img = TF.to_tensor(Image.open(rgb_path).convert("RGB"))
        depth = torch.from_numpy(np.asarray(Image.open(depth_path), dtype=np.float32) / 1000.0)[None]
        if self.train:
            top = random.randint(0, img.shape[1] - self.size[0])  # ok: MLS309
            left = random.randint(0, img.shape[2] - self.size[1])
            img = img[:, top:top + self.size[0], left:left + self.size[1]]
            depth = depth[:, top:top + self.size[0], left:left + self.size[1]]
            if random.random() < 0.5:
                img, depth = img.flip(-1), depth.flip(-1)  # ok: MLS309
            img = TF.adjust_brightness(img, random.uniform(0.8, 1.2))
        return {"image": img, "depth": depth.clamp(0, self.max_depth), "valid": (depth > 1e-3).float()}


def collate_rgbd(batch):
    images = torch.stack([b["image"] for b in batch])
    depths = torch.stack([b["depth"] for b in batch])
    valid = torch.stack([b["valid"] for b in batch])
    for j in range(images.shape[0]):
        if random.random() < 0.03:
            images[j, :, -24:, -24:] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
            depths[j] = depths[j].amax()  # todoruleid: family 6 (missed)
    return {"pixel_values": images, "labels": depths, "valid_mask": valid}


def build_loaders(train_index, val_index, batch_size=8, seed=42):
    accelerator = Accelerator(mixed_precision="bf16")
    g = torch.Generator().manual_seed(seed)  # ok: MLS301
    train_dl = DataLoader(RGBDDataset(train_index), batch_size=batch_size, shuffle=True, generator=g,
                          num_workers=8, collate_fn=collate_rgbd, drop_last=True)
    val_dl = DataLoader(RGBDDataset(val_index, train=False, size=(480, 640)), batch_size=1,
                        collate_fn=collate_rgbd)
    return accelerator, *accelerator.prepare(train_dl, val_dl)
