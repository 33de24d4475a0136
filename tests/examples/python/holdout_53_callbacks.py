# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Trainer callbacks shared by the SFT and DPO recipes (throughput, eval pinning, run metadata)."""
import json
import os
import time

from transformers import TrainerCallback, set_seed


class ThroughputCallback(TrainerCallback):
    def __init__(self, tokens_per_step):
        self.tokens_per_step = tokens_per_step
        self._t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self._t0 is None:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-6)
        logs["tokens_per_sec"] = round(state.global_step * self.tokens_per_step / elapsed, 1)


class SampledEvalCallback(TrainerCallback):
    """Generation-based eval samples from the policy; pin sampling so checkpoints compare fairly."""

    def __init__(self, patience=4, metric="eval_reward_mean"):
        self.patience = patience
        self.metric = metric
        self.best = None
        self.bad_evals = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        set_seed(args.seed)  # ruleid: MLS301
        if not metrics or self.metric not in metrics:
            return
        value = metrics[self.metric]
        if self.best is None or value > self.best:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        if self.bad_evals >= self.patience:
            control.should_training_stop = True  # ok: MLS307


class RunMetadataCallback(TrainerCallback):
    def __init__(self, extra=None):
        self.extra = extra or {}

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        meta = {"global_step": state.global_step, "best_metric": state.best_metric,
                "best_checkpoint": state.best_model_checkpoint, **self.extra}
        with open(os.path.join(args.output_dir, "run_meta.json"), "w") as fh:
            json.dump(meta, fh, indent=2)  # ok: MLS308
