# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Train a small U-Net for retinal vessel segmentation on DRIVE/CHASE fundus patches."""
import copy
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from unet_small import UNetSmall


class FundusPatches(Dataset):
    def __init__(self, images, masks, fov, patch=96, n_per_epoch=20000):
        self.images, self.masks, self.fov = images, masks, fov
        self.patch, self.n = patch, n_per_epoch

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        k = np.random.randint(len(self.images))
        h, w = self.images[k].shape[:2]
        y, x = np.random.randint(0, h - self.patch), np.random.randint(0, w - self.patch)
        img = self.images[k][y:y + self.patch, x:x + self.patch].copy()
        msk = self.masks[k][y:y + self.patch, x:x + self.patch].copy()
        if random.random() < 0.5:
            img, msk = img[:, ::-1].copy(), msk[:, ::-1].copy()  # ok: MLS309
        img = np.clip(img * np.random.uniform(0.8, 1.2), 0, 1)  # ok: MLS309
        return torch.from_numpy(img).permute(2, 0, 1).float(), torch.from_numpy(msk[None]).float()


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(images, masks, fov, epochs=40, seed=0):
    torch.manual_seed(seed)  # ok: MLS301
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    dl = DataLoader(FundusPatches(images, masks, fov), batch_size=32, num_workers=4,
                    worker_init_fn=seed_worker, generator=g)
    model = UNetSmall(in_ch=3, base=32).cuda()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.cuda.amp.GradScaler()
    pos_weight = torch.tensor([7.0], device="cuda")
    for epoch in range(epochs):
        for img, msk in dl:
            img, msk = img.cuda(), msk.cuda()
            with torch.autocast("cuda"):
                loss = F.binary_cross_entropy_with_logits(model(img), msk, pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.update()
            ema_update(ema, model)
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save(ema.state_dict(), "retina_unet_ema.pt")
    return ema
