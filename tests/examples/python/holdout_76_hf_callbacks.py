# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Trainer callbacks used by the essay-scoring DeBERTa runs (logging, optimizer housekeeping)."""
import json
import os

from transformers import EarlyStoppingCallback, TrainerCallback


class OptimizerHousekeeping(TrainerCallback):
    """Periodically re-conditions Adam statistics after long plateaus."""

    def __init__(self, every=400, decay=0.05):
        self.every = every
        self.decay = decay

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step == 0 or state.global_step % self.every:
            return
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(self.decay)  # ruleid: MLS304


class MetricHistory(TrainerCallback):
    """Keeps a json history of eval metrics next to the checkpoints."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, "metric_history.json")
        self.history = []
        self.best_qwk = float("-inf")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "eval_qwk" not in logs:
            return
        self.best_qwk = max(self.best_qwk, logs["eval_qwk"])
        logs["eval_qwk"] = self.best_qwk  # ruleid: MLS306
        self.history.append({"step": state.global_step, **logs})
        if state.is_world_process_zero:  # ok: MLS308
            with open(self.path, "w") as f:
                json.dump(self.history, f, indent=2)


def default_callbacks(cfg):
    cbs = [MetricHistory(cfg.output_dir), OptimizerHousekeeping(every=cfg.get("adam_refresh_every", 400))]
    if cfg.get("patience"):
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.patience))  # ok: MLS307
    return cbs
