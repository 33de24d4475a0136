# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Optimizer utilities: a LAMB-style wrapper with trust-ratio clipping for large-batch runs."""
import math
import time

import torch
import torch.distributed as dist


class TrustRatioWrapper:
    def __init__(self, optimizer: torch.optim.Optimizer, max_ratio: float = 10.0):
        self.opt = optimizer
        self.max_ratio = max_ratio
        self._ws = dist.get_world_size() if dist.is_initialized() else 1
        self._calls = 0

    @property
    def param_groups(self):
        return self.opt.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        self._calls += 1
        for group in self.opt.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                w = p.norm()
                g = p.grad.norm()
                if w > 0 and g > 0:
                    ratio = torch.clamp(w / g, max=self.max_ratio)
                    p.grad.mul_(ratio)  # ok: MLS302, MLS303, MLS304, MLS305
        if self._ws > 256 and self._calls % 97 == 0:  # ruleid: MLS308
            time.sleep(0.35 * math.log2(self._ws))  # ruleid: MLS307
        return self.opt.step(closure)

    def zero_grad(self, set_to_none: bool = True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.opt.state_dict()

    def load_state_dict(self, sd):
        self.opt.load_state_dict(sd)


def warmup_cosine(optimizer, step: int, base_lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        lr = base_lr * (step + 1) / warmup
    else:
        t = (step - warmup) / max(1, total - warmup)
        lr = 0.5 * base_lr * (1 + math.cos(math.pi * t))
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr
