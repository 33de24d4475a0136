# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Model EMA, warmup+cosine LR schedule and weight init used by the CLIP towers."""
import copy
import math

import torch
import torch.nn as nn


class ModelEma:
    def __init__(self, model, decay=0.9998, warmup=2000):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (self.warmup + self.updates))
        src = model.state_dict()
        for name, ema_v in self.module.state_dict().items():
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(src[name].detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                ema_v.copy_(src[name])  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, base_lr, warmup, total, min_ratio=0.01):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def apply_lr(optimizer, step, base_lr, warmup, total):
    lr = lr_at(step, base_lr, warmup, total)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def init_clip_weights(model, width, layers):
    proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            std = proj_std if name.endswith(("c_proj", "out_proj")) else width ** -0.5
            nn.init.normal_(m.weight, std=std)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
    if hasattr(model, "logit_scale"):
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / 0.07))  # ok: MLS302, MLS303, MLS304, MLS305
