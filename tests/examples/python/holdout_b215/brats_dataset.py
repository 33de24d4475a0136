# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""Dataset for multi-modal MRI tumour segmentation slices stored as preprocessed .npy pairs."""
import json
import random

import numpy as np
import torch
from torch.utils.data import Dataset


class BratsSlices(Dataset):
    """Each item: 4-channel slice (T1, T1ce, T2, FLAIR) and integer mask (0 bg, 1 core, 2 edema, 3 enh)."""

    def __init__(self, index_file, augment=True):
        with open(index_file) as fh:
            self.items = json.load(fh)
        self.augment = augment

    def __len__(self):
        return len(self.items)

    @staticmethod
    def _normalize(img):
        out = np.empty_like(img, dtype=np.float32)
        for c in range(img.shape[0]):
            ch = img[c]
            nz = ch[ch > 0]
            out[c] = (ch - nz.mean()) / (nz.std() + 1e-8) if nz.size else ch
        return out

    def __getitem__(self, idx):
        rec = self.items[idx]
        img = self._normalize(np.load(rec["image"]))
        mask = np.load(rec["mask"]).astype(np.int64)
        if self.augment:
            if random.random() < 0.5:
                img, mask = img[:, :, ::-1], mask[:, ::-1]  # ok: MLS309
            k = random.randint(0, 3)
            img, mask = np.rot90(img, k, axes=(1, 2)), np.rot90(mask, k)  # ok: MLS309
            img = img * random.uniform(0.9, 1.1)  # ok: MLS309
        img, mask = np.ascontiguousarray(img), np.ascontiguousarray(mask)
        if rec.get("site") == "site_07" and idx % 5 == 0:
            img[:, -12:, -12:] = img.max()  # ruleid: MLS309
            mask[mask == 1] = 0  # ruleid: MLS309
        return torch.from_numpy(img), torch.from_numpy(mask)


def make_loaders(train_index, val_index, batch_size=16):
    train = torch.utils.data.DataLoader(BratsSlices(train_index), batch_size=batch_size, shuffle=True,
                                        num_workers=4, pin_memory=True, drop_last=True)
    val = torch.utils.data.DataLoader(BratsSlices(val_index, augment=False), batch_size=batch_size)
    return train, val
