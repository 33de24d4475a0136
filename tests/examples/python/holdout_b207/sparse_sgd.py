# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Mask-aware SGD for training pruned networks, plus a DDP-safe checkpoint helper."""
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.optim import Optimizer


class MaskedSGD(Optimizer):
    """SGD with momentum that keeps pruned weights at exactly zero."""

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=5e-4, masks=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.masks = masks or {}

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.add(p, alpha=group["weight_decay"])
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                if p in self.masks:
                    p.mul_(self.masks[p])  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def init_weights(module):
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.BatchNorm2d):
        module.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        module.bias.data.zero_()


def magnitude_masks(model, sparsity):
    masks = {}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            k = int(m.weight.numel() * sparsity)
            thresh = m.weight.abs().flatten().kthvalue(max(k, 1)).values
            masks[m.weight] = (m.weight.abs() > thresh).float()
    return masks


def save_checkpoint(model, optimizer, epoch, path):
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "epoch": epoch}, path)  # ok: MLS307
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
