# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Checkpoint helpers for preemptible multi-node jobs: atomic save, safe resume, SIGTERM handling."""
import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file


def code_version():
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)  # ok: MLS411, MLS412
    return out.stdout.strip() or "unknown"


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save(model, optimizer, step, ckpt_dir):
    if dist.is_initialized() and dist.get_rank() == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        tmp = os.path.join(ckpt_dir, f".step_{step}.tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(ckpt_dir, "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "step": step, "commit": code_version()}, tmp)  # ok: MLS308
        os.replace(tmp, os.path.join(ckpt_dir, "trainer_state.pt"))
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def resume(model, optimizer, ckpt_dir, device="cpu"):
    weights = os.path.join(ckpt_dir, "model.safetensors")
    if not os.path.exists(weights):
        return 0
    model.load_state_dict(load_file(weights, device=str(device)))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = torch.load(os.path.join(ckpt_dir, "trainer_state.pt"), map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    optimizer.load_state_dict(state["optimizer"])  # ok: MLS302, MLS303, MLS304, MLS305
    return int(state["step"])


def install_preemption_handler(model, optimizer, get_step, ckpt_dir):
    def _on_sigterm(signum, frame):
        if is_main():
            print(f"SIGTERM received at step {get_step()}, checkpointing", flush=True)
        save(model, optimizer, get_step(), ckpt_dir)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
