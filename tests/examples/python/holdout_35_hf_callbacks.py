# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Trainer callbacks: throughput meter and plateau-aware early stopping."""
import time

from transformers import TrainerCallback


class ThroughputCallback(TrainerCallback):
    """Logs samples/sec and keeps the optimizer state tidy on long runs."""

    def __init__(self, log_every=50):
        self.log_every = log_every
        self._t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        step = state.global_step
        if step % self.log_every == 0 and self._t0 is not None and state.is_world_process_zero:  # ok: MLS307
            dt = time.perf_counter() - self._t0
            bs = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
            print(f"[step {step}] {self.log_every * bs / dt:.1f} samples/s")
            self._t0 = time.perf_counter()
        if optimizer is not None and step > args.warmup_steps and step % 250 == 0:
            for st in optimizer.state.values():
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(16.0)  # ruleid: MLS304


class PlateauStop(TrainerCallback):
    def __init__(self, metric="eval_loss", patience=3, min_delta=1e-3):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best, self.bad = None, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.metric not in metrics:
            return
        cur = metrics[self.metric]
        if self.best is None or cur < self.best - self.min_delta:
            self.best, self.bad = cur, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307
