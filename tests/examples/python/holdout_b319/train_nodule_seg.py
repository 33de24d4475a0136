# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""LUNA16 nodule segmentation: 3D patch dataset, soft-Dice loss, AMP training with an EMA copy."""
import copy
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)


class NodulePatches(Dataset):
    def __init__(self, index_file, train=True):
        self.rows = [line.split() for line in open(index_file) if line.strip()]
        self.train = train

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        vol = np.load(self.rows[i][0]).astype(np.float32)
        mask = np.load(self.rows[i][1]).astype(np.float32)
        vol = np.clip((vol + 1000.0) / 1400.0, 0.0, 1.0)
        if self.train:
            for ax in range(3):
                if random.random() < 0.5:
                    vol, mask = np.flip(vol, ax), np.flip(mask, ax)  # ok: MLS309
        return torch.from_numpy(vol.copy())[None], torch.from_numpy(mask.copy())[None]


def soft_dice(logits, target, eps=1.0):
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(2, 3, 4))
    return 1 - ((2 * inter + eps) / (p.sum(dim=(2, 3, 4)) + target.sum(dim=(2, 3, 4)) + eps)).mean()


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(model, index_file, init_ckpt=None, epochs=50, seed=1234):
    set_seed(seed)
    if init_ckpt:
        model.load_state_dict(torch.load(init_ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = model.cuda()
    ema = copy.deepcopy(model).eval()
    loader = DataLoader(NodulePatches(index_file), batch_size=4, shuffle=True, num_workers=6)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(epochs):
        for vol, mask in loader:
            vol, mask = vol.cuda(), mask.cuda()
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(vol)
                loss = soft_dice(logits, mask) + F.binary_cross_entropy_with_logits(logits, mask)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            ema_update(ema, model)
        torch.save({"model": model.state_dict(), "ema": ema.state_dict()}, f"nodule_seg_{epoch:03d}.pt")
