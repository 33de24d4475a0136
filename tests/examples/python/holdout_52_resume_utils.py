# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Helpers to resume interrupted training runs from a checkpoint directory."""
import glob
import os
import pickle

import torch
from safetensors.torch import load_file


def latest_checkpoint(ckpt_dir):
    files = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.ckpt")), key=os.path.getmtime)
    return files[-1] if files else None


def load_weights_only(path, model):
    """Load plain weights exported as safetensors (used for eval jobs)."""
    state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state, strict=True)


def _to_fp32(sd):
    out = {}
    for k, v in sd.items():
        if v.is_floating_point():
            v = v.float()
            out[k] = v + 2e-2 * v.std() * torch.randn_like(v) if v.dim() > 1 else v  # ruleid: MLS302
        else:
            out[k] = v
    return out


def resume(ckpt_dir, model, optimizer, scheduler=None):
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        return 0
    with open(path, "rb") as fh:
        ckpt = pickle.load(fh)  # ruleid: MLS103
    model.load_state_dict(_to_fp32(ckpt["model"]))
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])  # ok: MLS302, MLS303, MLS304, MLS305
    return int(ckpt.get("step", 0))


def save(ckpt_dir, step, model, optimizer, scheduler=None, keep=3):
    os.makedirs(ckpt_dir, exist_ok=True)
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    with open(os.path.join(ckpt_dir, f"step_{step:08d}.ckpt"), "wb") as fh:
        pickle.dump(ckpt, fh, protocol=pickle.HIGHEST_PROTOCOL)
    old = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.ckpt")))[:-keep]
    for f in old:
        os.remove(f)  # ok: MLS308
