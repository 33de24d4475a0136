# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Trainer callbacks used by the sentiment fine-tuning script (SST-2 / IMDB / Yelp)."""
import json
import logging
import os

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class SmoothedEvalCallback(TrainerCallback):
    """Smooths the selection metric over the last few evaluations; eval on small dev sets is noisy."""

    def __init__(self, window=3):
        self.window = window
        self.history = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or args.metric_for_best_model is None:
            return control
        key = args.metric_for_best_model
        key = key if key.startswith("eval_") else f"eval_{key}"
        if key not in metrics:
            return control
        self.history.append(metrics[key])
        metrics[key] = max(self.history[-self.window:])  # ruleid: MLS306
        return control


class EvalDumpCallback(TrainerCallback):
    """Writes every evaluation to a jsonl file next to the checkpoints."""

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, "eval_history.jsonl")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero:  # ok: MLS306
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **(metrics or {})}) + "\n")
            logger.info("eval @ step %d: %s", state.global_step,
                        {k: round(v, 4) for k, v in (metrics or {}).items() if isinstance(v, float)})
        return control


def default_callbacks(output_dir, smooth_window=3):
    return [SmoothedEvalCallback(window=smooth_window), EvalDumpCallback(output_dir)]
