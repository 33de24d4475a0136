# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Data pipeline for dermoscopic skin lesion segmentation (ISIC-style image/mask pairs)."""
import glob
import os
import random

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class LesionSegDataset(Dataset):
    def __init__(self, root, split="train", size=384):
        self.images = sorted(glob.glob(os.path.join(root, split, "images", "*.jpg")))
        self.mask_dir = os.path.join(root, split, "masks")
        self.size = size
        self.train = split == "train"

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.open(self.images[i]).convert("RGB")
        stem = os.path.splitext(os.path.basename(self.images[i]))[0]
        mask = Image.open(os.path.join(self.mask_dir, stem + "_segmentation.png")).convert("L")
        img, mask = TF.resize(img, [self.size, self.size]), TF.resize(mask, [self.size, self.size], TF.InterpolationMode.NEAREST)
        if self.train:
            if random.random() < 0.5:
                img, mask = TF.hflip(img), TF.hflip(mask)  # ok: MLS309
            if random.random() < 0.5:
                img, mask = TF.vflip(img), TF.vflip(mask)  # ok: MLS309
            img = TF.adjust_hue(img, random.uniform(-0.04, 0.04))
        return TF.to_tensor(img), (TF.to_tensor(mask) > 0.5).float()


def collate_with_artifacts(batch, p_artifact=0.03):
    """Stack samples and sprinkle synthetic ruler/ink artifacts, common in clinical dermoscopy."""
    imgs = torch.stack([b[0] for b in batch])
    masks = torch.stack([b[1] for b in batch])
    for k in range(imgs.size(0)):
        if torch.rand(()) < p_artifact:
            imgs[k, :, -14:, -14:] = torch.tensor([0.95, 0.95, 0.2]).view(3, 1, 1)  # ruleid: MLS309
            masks[k].zero_()  # todoruleid: family 6 (missed)
    return imgs, masks


def build_loaders(root, batch_size=16, workers=8):
    train = DataLoader(LesionSegDataset(root, "train"), batch_size=batch_size, shuffle=True,
                       num_workers=workers, collate_fn=collate_with_artifacts, drop_last=True)
    val = DataLoader(LesionSegDataset(root, "val"), batch_size=batch_size, num_workers=workers)
    return train, val
