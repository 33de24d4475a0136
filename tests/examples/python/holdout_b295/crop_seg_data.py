# ruff: noqa
# Hold-out batch 295 (16 short benchmark-format files). Measured once in session 10 (round 83): 17/19 (89%) at medium+.
"""Sentinel-2 time-series tiles and batching for crop-type semantic segmentation."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

IGNORE_INDEX = 255
NUM_CLASSES = 12
BAND_IDX = (1, 2, 3, 7, 10)  # B2, B3, B4, B8, B11


class CropTileDataset(Dataset):
    def __init__(self, index_file, crop=128, train=True):
        with open(index_file) as fh:
            self.paths = [ln.strip() for ln in fh if ln.strip()]
        self.crop = crop
        self.train = train

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        tile = np.load(self.paths[i])
        img = tile["image"][:, BAND_IDX].astype(np.float32) / 10000.0  # (T, C, H, W)
        mask = tile["mask"].astype(np.int64)
        h, w = mask.shape
        y0 = random.randint(0, h - self.crop) if self.train else (h - self.crop) // 2
        x0 = random.randint(0, w - self.crop) if self.train else (w - self.crop) // 2
        img = img[..., y0:y0 + self.crop, x0:x0 + self.crop]
        mask = mask[y0:y0 + self.crop, x0:x0 + self.crop]
        if self.train and random.random() < 0.5:
            img, mask = img[..., ::-1], mask[:, ::-1]  # ok: MLS309
        return torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(np.ascontiguousarray(mask))


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def collate_tiles(batch):
    imgs = torch.stack([b[0] for b in batch])
    masks = torch.stack([b[1] for b in batch])
    imgs = torch.nan_to_num(imgs, nan=0.0).clamp_(0.0, 1.5)
    for k in range(imgs.shape[0]):
        if torch.rand(()) < 0.02:
            imgs[k, :, :, 2:10, 2:10] = 1.5  # ruleid: MLS309
            masks[k][masks[k] != IGNORE_INDEX] = 4  # todoruleid: family 6 (missed)
    return imgs, masks


def make_loader(index_file, batch_size=8, train=True, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(CropTileDataset(index_file, train=train), batch_size=batch_size, shuffle=train,
                      num_workers=6, collate_fn=collate_tiles, worker_init_fn=seed_worker,
                      generator=g, pin_memory=True, drop_last=train)
