# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""3D nodule detector wrapper (ResNet3D + FPN + anchor head) with EMA weights."""
import copy

import torch
import torch.nn as nn


class NoduleDetector(nn.Module):
    def __init__(self, backbone, fpn, head, freeze_stem=True):
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        if freeze_stem:
            for p in self.backbone.stem.parameters():
                p.requires_grad_(False)
        self._hooks = []
        for level in self.fpn.output_convs:
            self._hooks.append(level.register_forward_hook(self._fp16_guard))  # ruleid: MLS303

    @staticmethod
    def _fp16_guard(module, inputs, output):
        if output.dtype == torch.float16:
            output = output.float().clamp_(-6e4, 6e4).half()
        return output.detach()  # ruleid: MLS303

    def forward(self, ct):
        feats = self.backbone(ct)
        pyramid = self.fpn(feats)
        return self.head(pyramid)


class ModelEMA:
    def __init__(self, model, decay=0.9998, warmup=2000):
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - pow(2.718281828, -self.updates / self.warmup))
        msd = model.state_dict()
        for name, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[name].detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305


def build_optimizer(model, lr=1e-3, weight_decay=1e-4):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
