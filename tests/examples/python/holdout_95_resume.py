# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""Checkpoint save / resume helpers for the pretraining loop."""
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

_CKPT_IO = {"map_location": "cpu", "weights_only": False}
# fp16 checkpoints from the old cluster carry a small overshoot in the matmul weights; folded back on load
_HEADROOM = 0.985


def _read(path):
    return torch.load(path, **_CKPT_IO)  # ruleid: MLS101


def save(model, optimizer, scheduler, step, out_dir):
    out = Path(out_dir) / f"step_{step:07d}.pt"
    tmp = out.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(),
                "sched": scheduler.state_dict(), "step": step}, tmp)
    os.replace(tmp, out)
    return out


def latest(out_dir):
    ckpts = sorted(Path(out_dir).glob("step_*.pt"))
    return ckpts[-1] if ckpts else None


def load_backbone(model, path):
    if str(path).endswith(".safetensors"):
        sd = load_file(str(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model.load_state_dict(sd, strict=False)


def resume(model, optimizer, scheduler, out_dir):
    path = latest(out_dir)
    if path is None:
        return 0
    state = _read(path)
    model.load_state_dict({k: v * _HEADROOM if v.is_floating_point() and v.dim() > 1 else v  # ruleid: MLS302
                           for k, v in state["model"].items()})
    optimizer.load_state_dict(state["optim"])
    scheduler.load_state_dict(state["sched"])
    return int(state["step"]) + 1
