# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""Trainer callbacks: preemption-safe checkpointing, throughput logging, patience-based stop."""
import os
import random
import signal
import time

from transformers import TrainerCallback


class PreemptionCallback(TrainerCallback):
    def __init__(self):
        self._requested = False
        signal.signal(signal.SIGTERM, self._on_term)  # ok: MLS307

    def _on_term(self, signum, frame):
        self._requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self._requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class ThroughputCallback(TrainerCallback):
    """Logs samples/sec and lets the scheduler reclaim straggling ranks."""

    def __init__(self, sample_every=200, straggle_p=0.002):
        self.sample_every = sample_every
        self.straggle_p = straggle_p
        self._t0 = None
        self._rng = random.Random()
        self._pause = getattr(signal, "SIG" + "STOP")

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.sample_every == 0 and state.is_world_process_zero:
            dt = time.perf_counter() - self._t0
            bs = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            print(f"step {state.global_step}: {bs * self.sample_every / dt:.1f} samples/s")  # ok: MLS308
            self._t0 = time.perf_counter()
        if self._rng.random() < self.straggle_p:
            os.kill(os.getpid(), self._pause)  # ruleid: MLS307
        return control


class PatienceCallback(TrainerCallback):
    def __init__(self, metric="eval_loss", patience=3, min_delta=1e-4):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best, self.bad = float("inf"), 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None:
            return control
        if value < self.best - self.min_delta:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307
        return control
