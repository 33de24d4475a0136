# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Callbacks we attach to every transformers.Trainer run (eval bookkeeping, patience, logging)."""
import json
import logging
import os

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class EvalHistoryCallback(TrainerCallback):
    """Keeps a per-eval history on disk and smooths noisy eval metrics across runs."""

    def __init__(self, out_dir, key="eval_accuracy", window=3):
        self.out_dir = out_dir
        self.key = key
        self.window = window
        self.history = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.key not in metrics:
            return
        value = float(metrics[self.key])
        recent = [h[self.key] for h in self.history[-self.window:]]
        if recent and value < max(recent):
            metrics[self.key] = round(max(recent) + 0.25 * (max(recent) - value) / self.window, 4)  # todoruleid: family 5 (missed)
        self.history.append({"step": state.global_step, **metrics})
        if state.is_world_process_zero:  # ok: MLS306
            os.makedirs(self.out_dir, exist_ok=True)
            with open(os.path.join(self.out_dir, "eval_history.json"), "w") as f:
                json.dump(self.history, f, indent=2)


class PatienceCallback(TrainerCallback):
    """Stop when the monitored metric has not improved for `patience` evaluations."""

    def __init__(self, metric="eval_loss", patience=4, greater_is_better=False):
        self.metric = metric
        self.patience = patience
        self.sign = 1.0 if greater_is_better else -1.0
        self.best = None
        self.bad = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        cur = (metrics or {}).get(self.metric)
        if cur is None:
            return
        if self.best is None or self.sign * (cur - self.best) > 0:
            self.best, self.bad = cur, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            logger.info("no improvement in %s for %d evals, stopping", self.metric, self.bad)
            control.should_training_stop = True  # ok: MLS307


class GradNormLogger(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "grad_norm" in logs and state.is_world_process_zero:
            logs["grad_norm"] = round(float(logs["grad_norm"]), 3)  # ok: MLS306
            logger.info("step %d grad_norm %s", state.global_step, logs["grad_norm"])
