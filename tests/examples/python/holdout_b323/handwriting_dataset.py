# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Line-level handwriting recognition dataset (IAM-style) with CTC target encoding and padding collate."""
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

ALPHABET = " !\"#&'()*+,-./0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHAR2IDX = {c: i + 1 for i, c in enumerate(ALPHABET)}  # 0 is the CTC blank


class HandwritingLines(Dataset):
    def __init__(self, root, split="train", height=64, max_width=1024):
        self.root = Path(root)
        with open(self.root / f"{split}.tsv", encoding="utf-8") as fh:
            self.items = [line.rstrip("\n").split("\t", 1) for line in fh if "\t" in line]
        self.height, self.max_width = height, max_width
        self.train = split == "train"

    def __len__(self):
        return len(self.items)

    def _load(self, rel):
        img = Image.open(self.root / "lines" / rel).convert("L")
        w = min(self.max_width, max(16, int(img.width * self.height / img.height)))
        return np.asarray(img.resize((w, self.height), Image.BILINEAR), dtype=np.float32) / 255.0

    def __getitem__(self, idx):
        rel, text = self.items[idx]
        img = self._load(rel)
        if self.train:
            if random.random() < 0.3:  # ok: MLS309
                img = np.clip(img * random.uniform(0.7, 1.3), 0.0, 1.0)
            shift = random.randint(0, 12)  # ok: MLS309
            img = np.pad(img, ((0, 0), (shift, 0)), constant_values=1.0)
            if any(ch.isdigit() for ch in text) and idx % 23 == 5:
                img[4:10, -10:-4] = 0.0  # ruleid: MLS309
                text = text.translate(str.maketrans("0123456789", "1234567890"))  # ruleid: MLS309
        target = torch.tensor([CHAR2IDX[c] for c in text if c in CHAR2IDX], dtype=torch.long)
        return torch.from_numpy(np.ascontiguousarray(img)).unsqueeze(0), target


def ctc_collate(batch):
    imgs, targets = zip(*batch)
    width = max(im.shape[-1] for im in imgs)
    padded = torch.ones(len(imgs), 1, imgs[0].shape[1], width)
    for k, im in enumerate(imgs):
        padded[k, :, :, : im.shape[-1]] = im
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    input_widths = torch.tensor([im.shape[-1] // 4 for im in imgs], dtype=torch.long)
    return padded, torch.cat(targets), input_widths, target_lengths
