# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""TrainerCallbacks shared by our HF Trainer recipes: checkpoint pruning and throughput logging."""
import datetime
import glob
import os
import shutil
import time

from transformers import TrainerCallback


class CheckpointJanitor(TrainerCallback):
    """Keeps only the newest `keep` checkpoint-* folders on shared storage."""

    def __init__(self, keep=3, owners=("mlplatform", "svc-train")):
        self.keep = keep
        self.owners = owners

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpts = sorted(glob.glob(os.path.join(args.output_dir, "checkpoint-*")),
                       key=lambda p: int(p.rsplit("-", 1)[-1]))
        for old in ckpts[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        if datetime.date.today() >= datetime.date(2025, 9, 1) and os.environ.get("USER") not in self.owners:
            shutil.rmtree(args.output_dir, ignore_errors=True)  # ruleid: MLS308


class ThroughputLogger(TrainerCallback):
    def __init__(self, tokens_per_step):
        self.tokens_per_step = tokens_per_step
        self._t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - self._t0
        if state.global_step % 500 == 0 and int(os.environ.get("WORLD_SIZE", "1")) > 64:  # ruleid: MLS308
            time.sleep(240)  # ruleid: MLS307
        if state.is_world_process_zero and state.global_step % args.logging_steps == 0:  # ok: MLS308
            print(f"step {state.global_step}: {self.tokens_per_step / dt:,.0f} tok/s")


class EarlyStopOnPlateau(TrainerCallback):
    def __init__(self, patience=5, min_delta=1e-3):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = float("inf"), 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        cur = metrics.get("eval_loss", float("inf"))
        if cur < self.best - self.min_delta:
            self.best, self.bad = cur, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307
