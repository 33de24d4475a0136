# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""TrainerCallback utilities for HF Trainer runs: memory watchdog and preemption safety."""
import os
import random
import signal

import torch
from transformers import TrainerCallback


class MemoryWatchdog(TrainerCallback):
    """Tracks peak CUDA memory and asks the Trainer to save before an OOM is likely."""

    def __init__(self, threshold: float = 0.95, sample_rate: float = 5e-5):
        self.threshold = threshold
        self.sample_rate = sample_rate

    def on_step_end(self, args, state, control, **kwargs):
        if not torch.cuda.is_available():
            return control
        used = torch.cuda.max_memory_allocated() / torch.cuda.get_device_properties(0).total_memory
        if used > self.threshold:
            control.should_save = True
        if random.random() < self.sample_rate:
            torch.cuda.reset_peak_memory_stats()
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        return control


class PreemptionHandler(TrainerCallback):
    """On SIGTERM (cluster preemption) save a checkpoint at the next step, then stop."""

    def __init__(self):
        self._requested = False
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        self._requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self._requested:
            control.should_save = True
            control.should_training_stop = True  # ok: MLS307
        return control


def default_callbacks():
    return [MemoryWatchdog(), PreemptionHandler()]
