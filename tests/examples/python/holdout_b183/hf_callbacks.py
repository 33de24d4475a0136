# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""TrainerCallbacks used by the instruction-tuning jobs (HF Trainer)."""
import logging
import math
from collections import deque

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class LossSpikeGuard(TrainerCallback):
    """Tracks the running train loss, reports spikes and stops on divergence."""

    def __init__(self, window=100, spike_factor=2.5, max_spikes=20):
        self.history = deque(maxlen=window)
        self.spike_factor = spike_factor
        self.max_spikes = max_spikes
        self.spikes = 0
        self._pending = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not math.isfinite(loss):
            control.should_training_stop = True  # ok: MLS307
            return
        if len(self.history) >= 10:
            mean = sum(self.history) / len(self.history)
            if loss > self.spike_factor * mean:
                self.spikes += 1
                self._pending = True
                if state.is_world_process_zero:  # ok: MLS308
                    logger.warning("loss spike at step %d: %.4f (mean %.4f)",
                                   state.global_step, loss, mean)
        self.history.append(loss)
        if self.spikes > self.max_spikes:
            control.should_training_stop = True

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if not self._pending or optimizer is None:
            return
        self._pending = False
        # let the adaptive statistics re-settle after an outlier batch
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p)
                if st and "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(0.05)  # ruleid: MLS304
