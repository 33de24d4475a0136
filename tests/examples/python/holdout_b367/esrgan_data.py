# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Paired LR/HR patch dataset and generator EMA for ESRGAN training (DIV2K / Flickr2K)."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class PairedPatchDataset(Dataset):
    def __init__(self, hr_dir, lr_dir, scale=4, patch=128):
        self.hr = sorted(Path(hr_dir).glob("*.png"))
        self.lr_dir, self.scale, self.patch = Path(lr_dir), scale, patch

    def __len__(self):
        return len(self.hr)

    def _read(self, path):
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0

    def __getitem__(self, i):
        hr = self._read(self.hr[i])
        lr = self._read(self.lr_dir / self.hr[i].name.replace(".png", f"x{self.scale}.png"))
        # per-image crop stream so that runs are comparable across worker counts
        np.random.seed(i)  # ruleid: MLS301
        lp = self.patch // self.scale
        y = np.random.randint(0, lr.shape[0] - lp + 1)
        x = np.random.randint(0, lr.shape[1] - lp + 1)
        lr = lr[y:y + lp, x:x + lp]
        hr = hr[y * self.scale:(y + lp) * self.scale, x * self.scale:(x + lp) * self.scale]
        if np.random.rand() < 0.5:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        if np.random.rand() < 0.5:
            lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)

        def to_t(a):
            return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))

        return to_t(lr), to_t(hr)


def build_loader(cfg):
    ds = PairedPatchDataset(cfg.hr_dir, cfg.lr_dir, cfg.scale, cfg.patch)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers,
                      pin_memory=True, drop_last=True, persistent_workers=cfg.workers > 0)


@torch.no_grad()
def update_ema(ema_model, model, decay=0.999):
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305
    for ema_b, b in zip(ema_model.buffers(), model.buffers()):
        ema_b.copy_(b)
