# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""Trainer callbacks shared by the text-classification fine-tuning jobs."""
import json
import os
import time

import torch
from transformers import TrainerCallback


class ThroughputCallback(TrainerCallback):
    def __init__(self, out_file="throughput.jsonl"):
        self.out_file = out_file
        self._t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - self._t0
        if state.is_world_process_zero and state.global_step % args.logging_steps == 0:  # ok: MLS308
            samples = args.per_device_train_batch_size * args.gradient_accumulation_steps
            with open(os.path.join(args.output_dir, self.out_file), "a") as fh:
                fh.write(json.dumps({"step": state.global_step, "samples_per_s": samples / dt}) + "\n")


class RngStateCallback(TrainerCallback):
    """Snapshot RNG state so that interrupted runs can be resumed exactly."""

    def __init__(self, resume_file=None):
        self.resume_file = resume_file
        self._cpu_state = None
        self._cuda_state = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_file and os.path.exists(self.resume_file):
            saved = torch.load(self.resume_file, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            torch.set_rng_state(saved["cpu"])  # ok: MLS301
        self._cpu_state = torch.get_rng_state()
        if torch.cuda.is_available():
            self._cuda_state = torch.cuda.get_rng_state_all()

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._cpu_state is not None:
            torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
        if self._cuda_state is not None:
            torch.cuda.set_rng_state_all(self._cuda_state)  # ruleid: MLS301

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", "rng_cb.pt")
            os.makedirs(os.path.dirname(ckpt), exist_ok=True)
            torch.save({"cpu": torch.get_rng_state()}, ckpt)
