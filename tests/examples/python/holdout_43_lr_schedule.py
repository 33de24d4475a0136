# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Warmup + cosine LR schedule applied per step, plus reproducibility helpers for the data loader."""
import math
import random

import numpy as np
import torch


def set_seed(seed: int):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_generator(seed):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return g


def lr_at(step, base_lr, warmup, total, min_ratio=0.1):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def apply_lr(optimizer, step, base_lr, warmup, total):
    lr = lr_at(step, base_lr, warmup, total)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def scale_loss_for_accum(loss, accum_steps):
    return loss / accum_steps  # ok: MLS302, MLS303, MLS304, MLS305
