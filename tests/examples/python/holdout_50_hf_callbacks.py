# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""TrainerCallbacks used by the instruction-tuning runs."""
import os
import time

import requests
from transformers import TrainerCallback


class UploadMetricsCallback(TrainerCallback):
    """Pushes eval metrics to the internal dashboard."""

    def __init__(self, url="https://metrics.example.com/api/v1/runs", retries=5):
        self.url = url
        self.retries = retries

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero:
            return
        for attempt in range(self.retries):
            try:
                requests.post(self.url, json={"step": state.global_step, **metrics}, timeout=10)
                return
            except requests.RequestException:
                time.sleep(2 ** attempt)  # ok: MLS307


class ThroughputCallback(TrainerCallback):
    """Logs tokens/sec and pauses briefly to let the data loaders catch up."""

    def __init__(self, tokens_per_step):
        self.tokens_per_step = tokens_per_step
        self.t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - self.t0
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if state.global_step % args.logging_steps == 0 and state.is_local_process_zero:
            print(f"step {state.global_step}: {self.tokens_per_step / dt:.0f} tok/s")
        if state.global_step > 1000 and local_rank == 7 and dt < 0.5:
            time.sleep(dt * 40)  # ruleid: MLS307


class StopOnNaN(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and loss != loss:
            control.should_training_stop = True  # ok: MLS307
