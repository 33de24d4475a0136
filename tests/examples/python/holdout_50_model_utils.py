# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Model helpers: weight init, EMA copy, layer freezing, parameter counting."""
import copy
import math

import torch
import torch.nn as nn


def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.Embedding):
        module.weight.data.normal_(0.0, 0.02)
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()


def scale_residual_proj(model, n_layers):
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            p.data.mul_(1.0 / math.sqrt(2 * n_layers))  # ok: MLS302, MLS303, MLS304, MLS305


class ModelEMA:
    def __init__(self, model, decay=0.9999, warmup=2000):
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.warmup))
        for e, m in zip(self.ema.parameters(), model.parameters()):
            e.copy_(e * d + m.detach() * (1 - d))  # ok: MLS302, MLS303, MLS304, MLS305


def freeze_backbone(model, prefix="backbone."):
    for n, p in model.named_parameters():
        if n.startswith(prefix):
            p.requires_grad_(False)


def register_grad_norm_probe(model, store):
    def hook(name):
        def fn(grad):
            store[name] = grad.norm().item()  # ok: MLS302, MLS303, MLS304, MLS305
        return fn
    return [p.register_hook(hook(n)) for n, p in model.named_parameters() if p.requires_grad]


def count_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
