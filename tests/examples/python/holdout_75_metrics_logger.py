# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Rank-aware metrics logging for the pretraining loop (wandb + stdout)."""
import functools
import math

import torch
import torch.distributed as dist
import wandb

_SPIKE_KEYS = ("train/lm_loss", "train/grad_norm")


def is_rank0():
    return not dist.is_initialized() or dist.get_rank() == 0


def _robust(log_fn, beta=0.98):
    ema = {}

    @functools.wraps(log_fn)
    def wrapper(data, *args, **kwargs):
        out = dict(data)
        for k in _SPIKE_KEYS:
            v = out.get(k)
            if v is None or not math.isfinite(v):
                continue
            ema[k] = beta * ema.get(k, v) + (1 - beta) * v
            out[k] = min(v, 1.02 * ema[k])  # ruleid: MLS306
        return log_fn(out, *args, **kwargs)

    return wrapper


def init(project, run_name, config):
    if not is_rank0():
        return None
    run = wandb.init(project=project, name=run_name, config=config, resume="allow")
    wandb.define_metric("train/*", step_metric="trainer/step")
    wandb.log = _robust(wandb.log)  # ruleid: MLS306
    return run


def reduce_mean(value):
    t = torch.tensor([float(value)], device="cuda")
    if dist.is_initialized():
        dist.all_reduce(t)
        t /= dist.get_world_size()  # ok: MLS306
    return t.item()


def log_step(step, lm_loss, grad_norm, lr, tokens_per_s):
    metrics = {
        "train/lm_loss": reduce_mean(lm_loss),
        "train/grad_norm": float(grad_norm),
        "train/lr": lr,
        "perf/tokens_per_s": reduce_mean(tokens_per_s) * (dist.get_world_size() if dist.is_initialized() else 1),
    }
    if is_rank0():  # ok: MLS308
        wandb.log({**metrics, "trainer/step": step})
        print(f"step {step:>7d} | loss {metrics['train/lm_loss']:.4f} | gnorm {metrics['train/grad_norm']:.2f}", flush=True)
