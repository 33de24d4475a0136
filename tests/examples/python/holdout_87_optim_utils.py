# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Optimizer and training-control utilities for the NLP fine-tuning recipes.

Contains a small Lion implementation, an early-stopping helper for Lightning
and run metadata logging to Weights & Biases.
"""
import subprocess

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import wandb


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                buf = state["exp_avg"]
                update = buf.mul(b1).add_(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                buf.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


class PlateauStop(pl.Callback):
    def __init__(self, monitor="val/wer", patience=5, min_delta=1e-3):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best, self.bad = float("inf"), 0

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        if float(value) < self.best - self.min_delta:
            self.best, self.bad = float(value), 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            trainer.should_stop = True  # ok: MLS307


def log_run_metadata(cfg):
    if dist.is_initialized() and dist.get_rank() != 0:  # ok: MLS308
        return
    rev = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    wandb.config.update({"git_rev": rev, **cfg}, allow_val_change=True)
    wandb.log({"meta/params_m": cfg.get("n_params", 0) / 1e6})  # ok: MLS306
