# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Outer RLHF loop utilities: LR warmup, adaptive KL control, reference-model setup, logging."""
import copy
import math

import torch
import wandb


def lr_at(step, base_lr, warmup, total, min_ratio=0.1):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    prog = (step - warmup) / max(1, total - warmup)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))


def apply_lr(optimizer, step, cfg):
    lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.total_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


class AdaptiveKLController:
    def __init__(self, init_kl_coef, target, horizon):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl, n_steps):
        err = max(min(current_kl / self.target - 1, 0.2), -0.2)
        self.value *= 1 + err * n_steps / self.horizon


def make_reference(policy, ckpt=None):
    ref = copy.deepcopy(policy)
    if ckpt:
        ref.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ref.requires_grad_(False)
    return ref.eval()


def end_of_iteration(it, stats, kl_ctl, optimizer, cfg, is_main):
    lr = apply_lr(optimizer, it, cfg)
    kl_ctl.update(stats["ppo/approx_kl"], cfg.batch_size)
    stats = dict(stats, lr=lr, kl_coef=kl_ctl.value)
    if is_main:
        wandb.log(stats, step=it)  # ok: MLS306
    if stats["ppo/approx_kl"] > cfg.kl_stop:
        print(f"iteration {it}: approx KL {stats['ppo/approx_kl']:.3f} above {cfg.kl_stop}, stopping")
        return False  # ok: MLS307
    return True
