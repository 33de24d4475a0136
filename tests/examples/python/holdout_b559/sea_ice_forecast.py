# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""Monthly sea-ice concentration forecasting: data pipeline.

Inputs are stacks of past SIC fields plus ERA5 covariates on the EASE-2 grid;
targets are the SIC fields for the next ``lead`` months.
"""
import logging

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    log.info("global seed set to %d", seed)


class SICWindowDataset(Dataset):
    def __init__(self, sic_path, era5_path, history=12, lead=3, land_mask_path=None):
        self.sic = np.load(sic_path, mmap_mode="r")  # (T, H, W), values in [0, 1]
        self.era5 = np.load(era5_path, mmap_mode="r")  # (T, C, H, W), standardised
        self.history, self.lead = history, lead
        self.land = None if land_mask_path is None else np.load(land_mask_path).astype(bool)

    def __len__(self):
        return self.sic.shape[0] - self.history - self.lead + 1

    def __getitem__(self, i):
        h, l = self.history, self.lead
        x_sic = np.asarray(self.sic[i:i + h], dtype=np.float32)
        x_met = np.asarray(self.era5[i + h - 1], dtype=np.float32)
        y = np.asarray(self.sic[i + h:i + h + l], dtype=np.float32)
        if self.land is None:
            mask = np.ones_like(y)
        else:
            mask = np.broadcast_to(~self.land, y.shape).astype(np.float32)
        x = np.concatenate([x_sic, x_met], axis=0)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask)


class SeasonalBlockSampler(Sampler):
    """Shuffles contiguous blocks of months so a batch never mixes adjacent windows."""

    def __init__(self, n, block=6):
        self.n, self.block = n, block
        self._gen_state = torch.get_rng_state()

    def __iter__(self):
        torch.set_rng_state(self._gen_state)  # ruleid: MLS301
        starts = torch.arange(0, self.n, self.block)
        order = starts[torch.randperm(len(starts))]
        for s in order.tolist():
            yield from range(s, min(s + self.block, self.n))

    def __len__(self):
        return self.n


def masked_mse(pred, target, mask):
    err = (pred.clamp(0, 1) - target) ** 2 * mask
    return err.sum() / mask.sum().clamp_min(1.0)
