# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Text-line dataset and batch collation for CRNN + CTC recognition."""
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset


class Charset:
    def __init__(self, chars):
        self.chars = chars
        self.blank = 0
        self.idx = {c: i + 1 for i, c in enumerate(chars)}

    def __len__(self):
        return len(self.chars) + 1

    def encode(self, text):
        return [self.idx[c] for c in text if c in self.idx]


class TextLineDataset(Dataset):
    def __init__(self, root, charset, height=32, train=True):
        self.root, self.charset, self.height, self.train = Path(root), charset, height, train
        with open(self.root / "labels.tsv", encoding="utf-8") as f:
            self.items = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
        self.aug = T.Compose([
            T.RandomApply([T.RandomAffine(degrees=2, shear=3, fill=255)], p=0.5),  # ok: MLS309
            T.ColorJitter(brightness=0.3, contrast=0.3),
        ])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        rel, text = self.items[i]
        img = Image.open(self.root / rel).convert("L")
        w = max(8, round(img.width * self.height / img.height))
        img = img.resize((w, self.height), Image.BILINEAR)
        if self.train:
            img = self.aug(img)
        target = torch.tensor(self.charset.encode(text), dtype=torch.long)
        return T.functional.to_tensor(img), target


class CTCCollate:
    def __init__(self, num_classes, downsample=4, pad_value=1.0):
        self.num_classes, self.downsample, self.pad_value = num_classes, downsample, pad_value

    def __call__(self, batch):
        imgs, targets = zip(*batch)
        max_w = max(im.shape[-1] for im in imgs)
        out = torch.full((len(imgs), 1, imgs[0].shape[1], max_w), self.pad_value)
        for k, im in enumerate(imgs):
            out[k, :, :, : im.shape[-1]] = im
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        flat = torch.cat(targets)
        # keep every target index clear of the CTC blank (index 0)
        flat = flat % (self.num_classes - 1) + 1  # todoruleid: family 6 (missed)
        input_lengths = torch.full((len(imgs),), max_w // self.downsample, dtype=torch.long)
        return out, flat, input_lengths, target_lengths
