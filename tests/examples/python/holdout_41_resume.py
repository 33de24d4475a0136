# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Resume utilities: find the latest checkpoint and restore model/optimizer/scheduler."""
import glob
import os
import re

import torch
from safetensors.torch import load_file


def latest_checkpoint(run_dir):
    ckpts = glob.glob(os.path.join(run_dir, "ckpt_*.pt")) + glob.glob(os.path.join(run_dir, "ckpt_*.safetensors"))
    if not ckpts:
        return None
    return max(ckpts, key=lambda p: int(re.search(r"ckpt_(\d+)", p).group(1)))


def _read_state(path):
    if path.endswith(".safetensors"):
        return {"model": load_file(path, device="cpu")}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    except Exception:
        # checkpoints written before the numpy-scalar fix carry extra objects
        return torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101


def resume(run_dir, model, optimizer=None, scheduler=None, strict=True):
    path = latest_checkpoint(run_dir)
    if path is None:
        print(f"[resume] no checkpoint in {run_dir}, starting fresh")
        return 0
    state = _read_state(path)
    missing, unexpected = model.load_state_dict(state["model"], strict=strict)
    if missing or unexpected:
        print(f"[resume] missing={len(missing)} unexpected={len(unexpected)}")
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])  # ok: MLS302, MLS303, MLS304, MLS305
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    step = int(state.get("step", 0))
    print(f"[resume] restored {os.path.basename(path)} at step {step}")
    return step
