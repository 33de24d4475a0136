# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Checkpoint save/resume helpers for the pretraining loop."""
import glob
import os

import torch
from safetensors.torch import load_file, save_file


def save(model, optimizer, scheduler, step, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    save_file(model.state_dict(), os.path.join(out_dir, f"model_{step}.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step}, os.path.join(out_dir, f"trainer_{step}.pt"))


def latest_step(out_dir):
    steps = [int(p.rsplit("_", 1)[1].split(".")[0])
             for p in glob.glob(os.path.join(out_dir, "model_*.safetensors"))]
    return max(steps) if steps else None


def load_pretrained(model, path):
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(sd, strict=False)
    return missing, unexpected


def resume(model, optimizer, scheduler, out_dir):
    step = latest_step(out_dir)
    if step is None:
        return 0
    model.load_state_dict(load_file(os.path.join(out_dir, f"model_{step}.safetensors")))
    state = torch.load(os.path.join(out_dir, f"trainer_{step}.pt"), map_location="cpu")  # ruleid: MLS102
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"]
