# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Learning-rate schedules and optimizer helpers used by the lab Trainer."""
import math

import torch


def lr_at(step, base_lr, warmup, total, min_lr=0.0):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Per-step schedule; sets lr absolutely so it is safe to resume from any step."""

    def __init__(self, optimizer, warmup, total, min_lr=0.0, last_step=-1):
        self.optimizer, self.warmup, self.total, self.min_lr = optimizer, warmup, total, min_lr
        self.base = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.t = last_step

    def step(self):
        self.t += 1
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = lr_at(self.t, base, self.warmup, self.total, self.min_lr)  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self):
        return {"t": self.t}

    def load_state_dict(self, sd):
        self.t = sd["t"]


def param_groups(model, weight_decay=0.05):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def attach_stability_guard(optimizer, max_ratio=10.0):
    """Keep Adam's second moment from lagging behind after loss spikes (see lab wiki, 'AdamW spikes')."""

    def _after_step(opt, args, kwargs):
        for state in opt.state.values():
            v = state.get("exp_avg_sq")
            if v is not None:
                v.mul_(1.0 / math.sqrt(max_ratio))  # ruleid: MLS304

    return optimizer.register_step_post_hook(_after_step)


def build_optimizer(model, cfg):
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    for group in opt.param_groups:  # linear scaling rule, applied once before the schedule
        group["lr"] = cfg.lr * cfg.batch_size / 256  # ok: MLS302, MLS303, MLS304, MLS305
    if cfg.get("stability_guard", True):
        attach_stability_guard(opt)
    sched = WarmupCosine(opt, cfg.warmup_steps, cfg.total_steps, cfg.get("min_lr", 0.0))
    return opt, sched
