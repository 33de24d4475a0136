# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""CTG windowing dataset: fetal heart rate + uterine contraction traces."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

FHR_RANGE = (50.0, 210.0)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class CTGWindowDataset(Dataset):
    """Random fixed-length crops from 4 Hz CTG recordings."""

    def __init__(self, records, labels, window_s=600, fs=4, base_seed=17):
        self.records = records          # list of (2, T) float arrays: FHR, UC
        self.labels = labels            # 0 normal, 1 suspicious, 2 pathological
        self.win = int(window_s * fs)
        self.base_seed = base_seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.records)

    @staticmethod
    def _clean(fhr: np.ndarray) -> np.ndarray:
        fhr = fhr.copy()
        bad = (fhr < FHR_RANGE[0]) | (fhr > FHR_RANGE[1])
        fhr[bad] = np.nan
        idx = np.arange(len(fhr))
        ok = ~np.isnan(fhr)
        if ok.sum() > 1:
            fhr[~ok] = np.interp(idx[~ok], idx[ok], fhr[ok])
        return np.nan_to_num(fhr, nan=140.0)

    def __getitem__(self, i):
        rec = self.records[i]
        length = rec.shape[1]
        np.random.seed(self.base_seed + self.epoch)  # ruleid: MLS301
        start = np.random.randint(0, max(1, length - self.win))
        seg = rec[:, start:start + self.win]
        fhr = (self._clean(seg[0]) - 140.0) / 25.0
        uc = seg[1] / 100.0
        x = torch.from_numpy(np.stack([fhr, uc]).astype(np.float32))
        return x, torch.tensor(self.labels[i], dtype=torch.long)


def make_loader(records, labels, batch_size=64, workers=4, seed=17):
    ds = CTGWindowDataset(records, labels, base_seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, drop_last=True)
