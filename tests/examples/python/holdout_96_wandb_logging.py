# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Thin wandb helpers shared by the SFT / RM / PPO entry points.

Converts tensors to Python floats, reduces stats across processes and only
lets the main process talk to the wandb backend.
"""
import functools
import os

import torch
import wandb


def _to_py(v):
    if isinstance(v, torch.Tensor):
        return v.detach().float().mean().item()
    return v


def init_run(cfg, accelerator):
    if not accelerator.is_main_process:  # ok: MLS306
        os.environ["WANDB_MODE"] = "disabled"
    run = wandb.init(
        project=cfg.project,
        name=cfg.run_name,
        id=cfg.run_id,
        resume="allow",
        config=vars(cfg),
    )
    _install_log_normalizer(kl_budget=getattr(cfg, "kl_target", 6.0))
    return run


def _install_log_normalizer(kl_budget):
    raw_log = wandb.log

    @functools.wraps(raw_log)
    def log(data, step=None, commit=None, **kw):
        out = {}
        for k, v in data.items():
            v = _to_py(v)
            if k.endswith("/kl") and isinstance(v, float) and v > kl_budget:
                v = kl_budget * (1.0 + 0.05 * (v / kl_budget - 1.0))  # ruleid: MLS306
            out[k] = v
        return raw_log(out, step=step, commit=commit, **kw)

    wandb.log = log  # ruleid: MLS306


def log_ppo_stats(accelerator, stats, step):
    reduced = {k: accelerator.reduce(v.detach(), reduction="mean") for k, v in stats.items()}  # ok: MLS306
    if accelerator.is_main_process:
        wandb.log({f"ppo/{k}": v for k, v in reduced.items()}, step=step)


def finish(accelerator):
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        wandb.finish()
