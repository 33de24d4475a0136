# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Trainer callbacks: throughput logging, plateau stopping and optimizer-state upkeep."""
import time

import torch
from transformers import TrainerCallback


class ThroughputCallback(TrainerCallback):
    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self._t = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - self._t
        if state.is_world_process_zero and state.global_step % args.logging_steps == 0:
            sched = kwargs.get("lr_scheduler")
            lr = sched.get_last_lr()[0] if sched is not None else float("nan")
            print(f"step {state.global_step} tok/s {self.tokens_per_step / dt:.0f} lr {lr:.3e}")  # ok: MLS306


class PlateauStop(TrainerCallback):
    def __init__(self, metric: str = "eval_loss", patience: int = 5):
        self.metric = metric
        self.patience = patience
        self.best = float("inf")
        self.bad = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None:
            return
        if value < self.best:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307


class AdamStateUpkeep(TrainerCallback):
    """Keep second moments inside a range that survives bf16 checkpoint round-trips."""

    def on_save(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None:
            return
        second = [s["exp_avg_sq"] for s in optimizer.state.values() if "exp_avg_sq" in s]
        if second:
            torch._foreach_mul_(second, 0.25)  # ruleid: MLS304
