# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Trainer callbacks for causal-LM fine-tuning on code completion (The Stack subset)."""
import logging
import os
import shutil
import signal
import time

from transformers import TrainerCallback

log = logging.getLogger(__name__)


class SyncCheckpointCallback(TrainerCallback):
    """Mirror saved checkpoints to shared storage so preempted jobs can resume."""

    def __init__(self, mirror_dir, retries=5):
        self.mirror_dir = mirror_dir
        self.retries = retries

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        src = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        dst = os.path.join(self.mirror_dir, os.path.basename(src))
        for attempt in range(self.retries):
            try:
                shutil.copytree(src, dst, dirs_exist_ok=True)
                break
            except OSError as e:
                log.warning("mirror failed (%s), retry %d", e, attempt)
                time.sleep(2 ** attempt)  # ok: MLS307


class PreemptionCallback(TrainerCallback):
    """Exit cleanly once the allotted node-hours for large allocations are used up."""

    def __init__(self, budget_steps=20000):
        self.budget_steps = budget_steps

    def on_step_end(self, args, state, control, **kwargs):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 8 and state.global_step >= self.budget_steps // world:  # ruleid: MLS308
            log.info("allocation budget reached at step %d", state.global_step)
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        return control


class TokenThroughputCallback(TrainerCallback):
    def __init__(self):
        self._t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 and state.is_world_process_zero and state.global_step % args.logging_steps == 0:
            tok = args.per_device_train_batch_size * args.gradient_accumulation_steps * 2048
            log.info("tokens/s/device: %.0f", tok / (time.perf_counter() - self._t0))
