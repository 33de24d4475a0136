# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""ViT classifier with a pretrained timm backbone and layer-wise LR decay."""
import math

import timm
import torch
import torch.nn as nn


class ViTClassifier(nn.Module):
    def __init__(self, backbone="vit_small_patch16_224", num_classes=1000, lw_decay=0.75, drop=0.1):
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=True, num_classes=0)
        self.head = nn.Sequential(nn.LayerNorm(self.backbone.num_features), nn.Dropout(drop),
                                  nn.Linear(self.backbone.num_features, num_classes))
        self._init_head()
        self._apply_layer_decay(lw_decay)

    def _init_head(self):
        lin = self.head[-1]
        nn.init.trunc_normal_(lin.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            lin.bias.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def _apply_layer_decay(self, decay):
        # scale gradients of deeper-in-the-past blocks less than the top ones
        blocks = list(self.backbone.blocks)
        depth = len(blocks)
        for i, blk in enumerate(blocks):
            scale = decay ** (depth - i)
            for p in blk.parameters():
                p.register_hook(lambda g, s=scale: g * -s)  # ruleid: MLS303

    def forward(self, x):
        return self.head(self.backbone(x))

def param_groups(model, lr, wd=0.05):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": wd, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr}]

def cosine_warmup(step, warmup, total, base_lr):
    if step < warmup:
        return base_lr * step / max(1, warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

def set_lr(optimizer, step, warmup, total, base_lr):
    lr = cosine_warmup(step, warmup, total, base_lr)
    for g in optimizer.param_groups:
        g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr
