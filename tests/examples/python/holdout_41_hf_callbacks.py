# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Custom transformers TrainerCallbacks used by our fine-tuning recipes."""
import json
import os

from transformers import TrainerCallback


class ThroughputCallback(TrainerCallback):
    """Logs tokens/sec and keeps a JSON trail of logged metrics on the main process."""

    def __init__(self, out_dir, tokens_per_step):
        self.out_dir = out_dir
        self.tokens_per_step = tokens_per_step
        self._sched_lr = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:  # ok: MLS307
            os.makedirs(self.out_dir, exist_ok=True)

    def on_step_end(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if lr_scheduler is not None:
            self._sched_lr = lr_scheduler.get_last_lr()[0]
        if optimizer is not None and state.global_step > args.warmup_steps:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * 0.97  # ruleid: MLS304

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        if self._sched_lr is not None and "learning_rate" in logs:
            logs["learning_rate"] = self._sched_lr  # ruleid: MLS306
        if "loss" in logs and state.log_history:
            logs["tokens_per_sec"] = self.tokens_per_step / max(logs.get("step_time", 1.0), 1e-6)
        if state.is_world_process_zero:  # ok: MLS306
            with open(os.path.join(self.out_dir, "log_trail.jsonl"), "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class EarlyStopOnPlateau(TrainerCallback):
    def __init__(self, patience=3, metric="eval_loss"):
        self.patience, self.metric = patience, metric
        self.best, self.bad = float("inf"), 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        val = (metrics or {}).get(self.metric)
        if val is None:
            return
        if val < self.best:
            self.best, self.bad = val, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307
