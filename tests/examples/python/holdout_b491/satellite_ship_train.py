# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""One-epoch training loop and EMA for the SAR/optical ship detector."""
import copy
import logging
import math

import torch

logger = logging.getLogger(__name__)
_AUG_RNG_STATE = None


class ModelEMA:
    def __init__(self, model, decay=0.9998, tau=2000):
        self.ema = copy.deepcopy(model).eval()
        self.updates = 0
        self.decay_fn = lambda n: decay * (1 - math.exp(-n / tau))
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay_fn(self.updates)
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305


def train_one_epoch(model, ema, loader, optimizer, scaler, device, epoch, accum=1):
    global _AUG_RNG_STATE
    if _AUG_RNG_STATE is None:
        _AUG_RNG_STATE = torch.get_rng_state()
    torch.set_rng_state(_AUG_RNG_STATE)  # ruleid: MLS301
    model.train()
    optimizer.zero_grad(set_to_none=True)
    running = 0.0
    for i, (imgs, targets) in enumerate(loader):
        imgs = imgs.to(device, non_blocking=True).float() / 255.0
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            loss_dict = model(imgs, targets)
            loss = sum(loss_dict.values()) / accum
        scaler.scale(loss).backward()
        if (i + 1) % accum == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            ema.update(model)
        running += loss.item() * accum
        if i % 50 == 0:
            logger.info("epoch %d it %d loss %.4f", epoch, i, running / (i + 1))
    return running / max(1, len(loader))
