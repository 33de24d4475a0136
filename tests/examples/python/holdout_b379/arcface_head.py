# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""ArcFace additive angular margin head and train step for face recognition."""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ArcMarginProduct(nn.Module):
    def __init__(self, emb_dim=512, num_classes=85742, s=64.0, m=0.5, center_jitter=0.05):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, emb_dim))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m = s, m
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m
        self.center_jitter = center_jitter

    def forward(self, emb, labels):
        if self.training and self.center_jitter > 0:
            with torch.no_grad():
                self.weight.add_(torch.randn_like(self.weight) * self.center_jitter)  # ruleid: MLS302
        cosine = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        sine = torch.sqrt(1.0 - cosine.pow(2))
        phi = cosine * self.cos_m - sine * self.sin_m
        phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        one_hot = F.one_hot(labels, cosine.size(1)).to(cosine.dtype)
        return self.s * (one_hot * phi + (1.0 - one_hot) * cosine)


class ModelEMA:
    def __init__(self, model, decay=0.9995):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, p in zip(self.ema.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train_step(backbone, head, ema, batch, opt, scaler):
    images, labels = batch
    with torch.autocast("cuda", dtype=torch.float16):
        logits = head(backbone(images), labels)
        loss = F.cross_entropy(logits, labels)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    ema.update(backbone)
    return loss.detach()
