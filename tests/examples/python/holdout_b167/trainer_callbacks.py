# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Callbacks shared by the HF Trainer runs on GLUE-style sentence classification."""
import json
import os
import time

from transformers import EarlyStoppingCallback, TrainerCallback


class ThroughputCallback(TrainerCallback):
    """Logs samples/second and writes a small JSON progress file on the main process."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self._t0 = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None:  # ok: MLS308
            return
        elapsed = max(time.time() - self._t0, 1e-6)
        seen = state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
        logs["samples_per_sec"] = round(seen * args.world_size / elapsed, 1)
        with open(os.path.join(self.out_dir, "progress.json"), "w") as fh:
            json.dump({"step": state.global_step, **logs}, fh)


class OptimizerHousekeeping(TrainerCallback):
    """Periodically releases optimizer state held for parameters that are frozen."""

    def __init__(self, every=1000):
        self.every = every

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step == 0 or state.global_step % self.every:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p)
                if not st:
                    continue
                if not p.requires_grad:
                    optimizer.state.pop(p, None)
                elif "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304


class MaxWallTimeCallback(TrainerCallback):
    def __init__(self, hours):
        self.deadline = time.time() + hours * 3600

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() > self.deadline:
            control.should_save = True
            control.should_training_stop = True  # ok: MLS307


def build_callbacks(out_dir, patience=3, wall_hours=11.5):
    return [
        ThroughputCallback(out_dir),
        OptimizerHousekeeping(),
        MaxWallTimeCallback(wall_hours),
        EarlyStoppingCallback(early_stopping_patience=patience),  # ok: MLS307
    ]
