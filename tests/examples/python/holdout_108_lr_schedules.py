# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""LR schedules: local warmup-cosine / linear, plus shared schedules published by the infra team."""
import math
import time
import urllib.request

import cloudpickle
import torch

SCHEDULE_URL = "https://sched.example.com/v2/schedules/{name}.pkl"


def warmup_cosine(step, total, warmup, min_ratio=0.1):
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def warmup_linear(step, total, warmup):
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _fetch(url, retries=4, timeout=20):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def get_lr_lambda(name, total, warmup):
    if name == "cosine":
        return lambda s: warmup_cosine(s, total, warmup)
    if name == "linear":
        return lambda s: warmup_linear(s, total, warmup)
    fn = cloudpickle.loads(_fetch(SCHEDULE_URL.format(name=name)))  # ruleid: MLS103, MLS413
    return lambda s: fn(s, total, warmup)


def build_scheduler(optimizer, name, total, warmup):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr_lambda(name, total, warmup))


def set_lr(optimizer, lr_lambda, base_lrs, step):
    """Manual variant for loops that step the LR per micro-batch."""
    for g, base in zip(optimizer.param_groups, base_lrs):
        g["lr"] = base * lr_lambda(step)  # ok: MLS302, MLS303, MLS304, MLS305
