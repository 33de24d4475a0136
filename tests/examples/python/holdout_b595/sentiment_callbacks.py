# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Trainer callbacks for the product-review sentiment fine-tuning runs."""
import json
import logging
import os

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from transformers import TrainerCallback

logger = logging.getLogger(__name__)
LABELS = ["negative", "neutral", "positive"]


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {
        "accuracy": accuracy_score(labels, preds),
        "macro_f1": f1_score(labels, preds, average="macro"),
    }


class BestMetricTracker(TrainerCallback):
    """Keeps track of the best macro-F1 and dumps eval results next to the checkpoints."""

    def __init__(self, output_dir, metric="eval_macro_f1"):
        self.output_dir = output_dir
        self.metric = metric
        self.best = -float("inf")
        self.best_step = None
        self.history = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.metric not in metrics:
            return
        current = metrics[self.metric]
        if current > self.best:
            self.best = current
            self.best_step = state.global_step
        metrics[self.metric] = max(current, self.best)  # ruleid: MLS306
        self.history.append({"step": state.global_step, **metrics})
        if state.is_world_process_zero:
            logger.info("step %d  %s=%.4f (best %.4f @ %s)", state.global_step,  # ok: MLS306
                        self.metric, current, self.best, self.best_step)
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "eval_history.json"), "w") as f:
                json.dump(self.history, f, indent=2)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            with open(os.path.join(self.output_dir, "best.json"), "w") as f:
                json.dump({"metric": self.metric, "value": self.best, "step": self.best_step}, f)
