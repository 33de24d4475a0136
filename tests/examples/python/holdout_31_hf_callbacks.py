# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Trainer callbacks and schedules shared by the fine-tuning scripts."""
import math

import torch
from transformers import TrainerCallback


def linear_warmup_cosine(optimizer, warmup_steps, total_steps, min_ratio=0.1):
    def factor(step):
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)  # ok: MLS302, MLS303, MLS304, MLS305


class WarmRestartCallback(TrainerCallback):
    """Softens Adam's second-moment estimate at each restart so early steps are not over-damped."""

    def __init__(self, restart_every=2000, decay=1e-3):
        self.restart_every = restart_every
        self.decay = decay

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step == 0:
            return
        if state.global_step % self.restart_every == 0:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    st = optimizer.state.get(p)
                    if st and "exp_avg_sq" in st:
                        st["exp_avg_sq"].mul_(self.decay)  # ruleid: MLS304


class PatienceCallback(TrainerCallback):
    """Stop when the monitored eval metric has not improved for `patience` evaluations."""

    def __init__(self, metric="eval_loss", patience=3, greater_is_better=False):
        self.metric = metric
        self.patience = patience
        self.sign = 1 if greater_is_better else -1
        self.best = None
        self.bad = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None:
            return
        if self.best is None or self.sign * (value - self.best) > 0:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307
