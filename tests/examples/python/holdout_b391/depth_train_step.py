# ruff: noqa
# Hold-out batch 391 (short files, 16 domains). Measured once in session 15 (round 107): 14/17 (82%) at medium+.
"""Training step for monocular depth (DPT-style decoder) with scale-invariant log loss and EMA."""
import copy

import torch
import torch.nn as nn


def silog_loss(pred, target, mask, lam=0.85, eps=1e-6):
    d = torch.log(pred[mask] + eps) - torch.log(target[mask] + eps)
    return torch.sqrt((d ** 2).mean() - lam * d.mean() ** 2) * 10.0


class ModelEMA:
    def __init__(self, model, decay=0.9998):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def build_optimizer(model, lr=5e-5, decoder_mult=10.0):
    enc = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    dec = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    return torch.optim.AdamW([
        {"params": enc, "lr": lr, "name": "encoder"},
        {"params": dec, "lr": lr * decoder_mult, "name": "decoder"},
    ], weight_decay=1e-2)


def build_scheduler(optimizer, total_steps, power=0.9):
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total_steps, power=power)


class DepthTrainer:
    def __init__(self, model, optimizer, scheduler, ema=None, min_depth=1e-3, max_depth=10.0):
        self.model, self.optimizer, self.scheduler, self.ema = model, optimizer, scheduler, ema
        self.min_depth, self.max_depth = min_depth, max_depth
        self.step = 0

    def train_step(self, batch):
        image, depth = batch["image"].cuda(), batch["depth"].cuda()
        mask = (depth > self.min_depth) & (depth < self.max_depth)
        pred = self.model(image)
        pred = nn.functional.interpolate(pred, size=depth.shape[-2:], mode="bilinear", align_corners=False)
        loss = silog_loss(pred.clamp_min(self.min_depth), depth, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        for group in self.optimizer.param_groups:
            if group.get("name") == "decoder":
                group["lr"] *= 1.0005  # ruleid: MLS304
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return {"loss": loss.item(), "lr_enc": self.optimizer.param_groups[0]["lr"]}
