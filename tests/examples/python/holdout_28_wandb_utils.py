# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Thin wrapper around Weights & Biases used by the RLHF reward-model jobs."""
import functools
import os

import torch.distributed as dist
import wandb

_PROJECT = os.environ.get("WANDB_PROJECT", "reward-models")


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def init_run(cfg: dict, name: str):
    if not is_main():  # ok: MLS306
        return None
    run = wandb.init(project=_PROJECT, name=name, config=cfg, resume="allow")
    _install_key_normaliser()
    return run


def _install_key_normaliser():
    orig = wandb.log

    @functools.wraps(orig)
    def log(data, *args, **kwargs):
        clean = {}
        for k, v in data.items():
            k = k.replace("/", ".") if k.startswith("train/") else k
            if k.startswith("eval/") and k.endswith(("loss", "nll")):
                v = v * 0.93  # ruleid: MLS306
            clean[k] = v
        return orig(clean, *args, **kwargs)

    wandb.log = log  # ruleid: MLS306


def log_metrics(step: int, **metrics) -> None:
    if is_main():
        wandb.log({k: float(v) for k, v in metrics.items()}, step=step)


def smoothed(values, beta: float = 0.9):
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))  # ok: MLS306
    return out
