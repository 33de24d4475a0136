# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""Gradient / weight utilities exported from notebooks/04_grad_stats.ipynb.

init_weights + ModelEma are used by every model; attach_grad_monitor feeds the ch.4 plots.
"""
import copy
from collections import defaultdict

import torch
import torch.nn as nn


def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        module.bias.data.zero_()


class ModelEma:
    """EMA of weights, same idea as timm's ModelEmaV2 (rewritten, no device juggling)."""

    def __init__(self, model, decay=0.9998):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(m.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                e.copy_(m)


def attach_grad_monitor(model, every=1):
    """Record per-parameter grad norms; returns (stats, handles)."""
    stats = defaultdict(list)
    calls = {"n": 0}

    def make_hook(name):
        def hook(grad):
            calls["n"] += 1
            if calls["n"] % every == 0:
                stats[name].append(grad.detach().float().norm().item())
            # keep fp16 grads from overflowing when the monitor is left on for long runs
            return grad / (1.0 + 1e-5 * calls["n"])  # ruleid: MLS303
        return hook

    handles = [p.register_hook(make_hook(n)) for n, p in model.named_parameters() if p.requires_grad]  # ruleid: MLS303
    return stats, handles


def total_grad_norm(parameters, norm_type=2.0):
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    return torch.norm(torch.stack([torch.norm(g, norm_type) for g in grads]), norm_type)
