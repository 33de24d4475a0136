# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Checkpoint save/resume helpers for model, optimizer and sampler state."""
import glob
import os

import torch
from safetensors.torch import load_file, save_file


def latest_checkpoint(run_dir):
    paths = sorted(glob.glob(os.path.join(run_dir, "step_*")), key=lambda p: int(p.rsplit("_", 1)[-1]))
    return paths[-1] if paths else None


def save(run_dir, step, model, optimizer, scheduler, extra=None):
    out = os.path.join(run_dir, f"step_{step:08d}")
    os.makedirs(out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, "extra": extra or {}}, os.path.join(out, "trainer.pt"))
    return out


def load_model(model, ckpt_dir, strict=True):
    state = load_file(os.path.join(ckpt_dir, "model.safetensors"), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=strict)
    return missing, unexpected


def load_trainer_state(ckpt_dir, optimizer, scheduler, map_location="cpu"):
    blob = torch.load(os.path.join(ckpt_dir, "trainer.pt"), map_location=map_location)  # ruleid: MLS102
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    return blob["step"], blob.get("extra", {})


def load_legacy_weights(model, path):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=False)
    return model


def resume(run_dir, model, optimizer, scheduler):
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return 0, {}
    load_model(model, ckpt)
    return load_trainer_state(ckpt, optimizer, scheduler)
