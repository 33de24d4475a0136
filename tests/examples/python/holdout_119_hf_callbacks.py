# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""Custom TrainerCallbacks used by the instruction-tuning recipes."""
import json
import os

import torch
from transformers import TrainerCallback


class PlateauStopCallback(TrainerCallback):
    """Stop when eval loss has not improved by min_delta for `patience` evaluations."""

    def __init__(self, patience=3, min_delta=1e-3):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = float("inf"), 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = metrics.get("eval_loss")
        if loss is None:
            return
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307


class DeterministicEpochCallback(TrainerCallback):
    """Keep dropout / augmentation RNG aligned across resumed runs."""

    def on_train_begin(self, args, state, control, **kwargs):
        self._cpu_state = torch.get_rng_state()
        self._cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_epoch_begin(self, args, state, control, **kwargs):
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
        if self._cuda_state is not None:
            torch.cuda.set_rng_state_all(self._cuda_state)  # ruleid: MLS301


class MetricsDumpCallback(TrainerCallback):
    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, "eval_history.jsonl")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero:  # ok: MLS308
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, **metrics}) + "\n")
