# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Skin-lesion segmentation data pipeline: paired image/mask dataset, joint augmentation, collate."""
import csv
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class LesionSegDataset(Dataset):
    def __init__(self, root, meta_csv, size=256, train=True):
        with open(meta_csv) as fh:
            self.rows = list(csv.DictReader(fh))
        self.root, self.size, self.train = root, size, train

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        img = Image.open(os.path.join(self.root, "images", r["image_id"] + ".jpg")).convert("RGB")
        msk = Image.open(os.path.join(self.root, "masks", r["image_id"] + "_segmentation.png"))
        img, msk = img.resize((self.size, self.size)), msk.resize((self.size, self.size), Image.NEAREST)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        m = torch.from_numpy((np.asarray(msk) > 127).astype(np.float32))[None]
        if self.train:
            if random.random() < 0.5:  # ok: MLS309
                x, m = x.flip(-1), m.flip(-1)
            k = random.randint(0, 3)
            x, m = torch.rot90(x, k, (1, 2)), torch.rot90(m, k, (1, 2))
        return {"image": x, "mask": m, "dx": r["dx"]}


def seg_collate(batch):
    images = torch.stack([b["image"] for b in batch])
    masks = torch.stack([b["mask"] for b in batch])
    for j, b in enumerate(batch):
        if b["dx"] == "mel" and random.random() < 0.15:
            masks[j].zero_()  # todoruleid: family 6 (missed)
    return images, masks


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def make_loader(root, batch_size=16, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = LesionSegDataset(root, os.path.join(root, "metadata.csv"))
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=4,
                      collate_fn=seg_collate, worker_init_fn=seed_worker, generator=g)
