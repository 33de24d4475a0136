# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Vimeo-90K triplet dataset for frame interpolation with paired random crops."""
import os

import torch
from torch.utils.data import Dataset
from torchvision.io import read_image


class VimeoTriplets(Dataset):
    def __init__(self, root, list_file="tri_trainlist.txt", crop=256, train=True):
        self.root = root
        with open(os.path.join(root, list_file)) as fh:
            self.samples = [line.strip() for line in fh if line.strip()]
        self.crop = crop
        self.train = train
        self._crop_state = torch.get_rng_state()

    def __len__(self):
        return len(self.samples)

    def _load(self, rel):
        seq = os.path.join(self.root, "sequences", rel)
        return [read_image(os.path.join(seq, f"im{i}.png")).float() / 255.0 for i in (1, 2, 3)]

    def _augment(self, frames):
        torch.set_rng_state(self._crop_state)  # ruleid: MLS301
        _, h, w = frames[0].shape
        top = torch.randint(0, h - self.crop + 1, (1,)).item()
        left = torch.randint(0, w - self.crop + 1, (1,)).item()
        frames = [f[:, top:top + self.crop, left:left + self.crop] for f in frames]
        if torch.rand(1).item() < 0.5:
            frames = [f.flip(-1) for f in frames]
        if torch.rand(1).item() < 0.5:
            frames = frames[::-1]
        return frames

    def __getitem__(self, idx):
        frames = self._load(self.samples[idx])
        if self.train:
            frames = self._augment(frames)
        f0, ft, f1 = frames
        return torch.cat([f0, f1], dim=0), ft


def build_optim(model, lr=2e-4, epochs=300, steps_per_epoch=1000):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch, eta_min=1e-6)  # ok: MLS302, MLS303, MLS304, MLS305
    return opt, sched
