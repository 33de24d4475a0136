# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Checkpoint save/resume helpers for the accelerate-based two-tower trainer.

Supports elastic restarts where the number of processes differs between the
saved run and the resumed run.
"""
import json
import os

import torch
from accelerate import Accelerator


def save_run_meta(accelerator: Accelerator, out_dir: str, step: int, sampler_state: dict):
    if accelerator.is_main_process:  # ok: MLS308
        with open(os.path.join(out_dir, "run_meta.json"), "w") as f:
            json.dump({"step": step, "num_processes": accelerator.num_processes}, f)
        torch.save(sampler_state, os.path.join(out_dir, "sampler.pt"))
    accelerator.wait_for_everyone()  # ok: MLS307


def resume(accelerator: Accelerator, optimizer, ckpt_dir: str) -> tuple:
    accelerator.load_state(ckpt_dir)
    with open(os.path.join(ckpt_dir, "run_meta.json")) as f:
        meta = json.load(f)
    sampler_state = torch.load(os.path.join(ckpt_dir, "sampler.pt"), weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    old_world = int(meta.get("num_processes", accelerator.num_processes))
    if old_world != accelerator.num_processes:
        accelerator.print(f"elastic resume: {old_world} -> {accelerator.num_processes} processes")
        # second moments were accumulated at a different global batch size;
        # drop them so Adam re-estimates variance at the new scale
        for state in optimizer.state.values():
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304
    return int(meta["step"]), sampler_state


def latest_checkpoint(root: str):
    runs = [d for d in os.listdir(root) if d.startswith("step_")] if os.path.isdir(root) else []
    if not runs:
        return None
    return os.path.join(root, max(runs, key=lambda d: int(d.split("_")[1])))
