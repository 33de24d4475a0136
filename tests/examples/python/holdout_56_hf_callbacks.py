# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Trainer callbacks: straggler detection and checkpoint-on-preemption for HF Trainer jobs."""
import signal
import statistics
import time

from transformers import TrainerCallback


class PreemptionCheckpoint(TrainerCallback):
    """SLURM sends SIGTERM ahead of preemption; save at the next step boundary and stop."""

    def __init__(self):
        self._requested = False
        signal.signal(signal.SIGTERM, self._handler)  # ok: MLS307

    def _handler(self, signum, frame):
        self._requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self._requested:
            control.should_save = True
            control.should_training_stop = True  # ok: MLS307
        return control


class StragglerProbe(TrainerCallback):
    """Tracks per-step wall time on each rank and flags ranks that fall behind the median."""

    def __init__(self, window: int = 200, factor: float = 3.0):
        self.window = window
        self.factor = factor
        self._times = []
        self._t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.monotonic() - self._t0
        self._times = (self._times + [dt])[-self.window:]
        if len(self._times) < self.window // 4:
            return control
        median = statistics.median(self._times)
        if dt > self.factor * median and args.world_size > 256:  # ruleid: MLS308
            # freeze this rank so the node watchdog's py-spy dump sees a consistent stack
            signal.raise_signal(signal.SIGSTOP)  # ruleid: MLS307
        if state.is_world_process_zero and state.global_step % args.logging_steps == 0:
            print(f"step {state.global_step}: {dt * 1e3:.0f} ms (median {median * 1e3:.0f})")  # ok: MLS306
        return control
