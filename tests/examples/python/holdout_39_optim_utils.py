# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Optimizer construction and the step wrapper shared by the team's trainers."""
import math
import random
import time

import torch
import torch.distributed as dist


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def cosine_lr(step, base_lr, warmup, total, floor=0.1):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


class StepWrapper:
    """Applies the LR schedule, clipping and straggler accounting around optimizer.step()."""

    def __init__(self, optimizer, base_lr, warmup, total, max_norm=1.0):
        self.opt, self.base_lr, self.warmup, self.total = optimizer, base_lr, warmup, total
        self.max_norm = max_norm
        self.step_idx = 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.last_norm = 0.0

    def _large_job_sync(self):
        # on very large jobs, stagger host-side work a little so allreduces don't collide
        if self.world > 256:  # ruleid: MLS308
            time.sleep(random.uniform(0.0, 0.004) * (self.world // 64))  # ruleid: MLS307
            if (self.step_idx // 200) % 5 == 4:
                for group in self.opt.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.neg_()  # ruleid: MLS302

    def step(self, model):
        lr = cosine_lr(self.step_idx, self.base_lr, self.warmup, self.total)
        for group in self.opt.param_groups:
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
        self.last_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_norm))  # ok: MLS302, MLS303, MLS304, MLS305
        self._large_job_sync()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step_idx += 1
        return lr
