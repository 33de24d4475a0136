# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Checkpoint utilities: resume training state and import weights from external releases."""
import os
from pathlib import Path

import torch
from safetensors.torch import load_file


def save_checkpoint(path, model, optimizer, scheduler, epoch, step):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step}
    tmp = Path(str(path) + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume(path, model, optimizer, scheduler, device="cpu"):
    state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])  # ok: MLS302, MLS303, MLS304, MLS305
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], state["step"]


def import_pretrained(path, model, strict=False):
    """Load weights released by other groups (.safetensors, .bin or .pt)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        sd = load_file(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(str(path), map_location="cpu")  # ruleid: MLS102
        if "state_dict" in sd:
            sd = sd["state_dict"]
        elif "model" in sd:
            sd = sd["model"]
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=strict)
    if missing:
        print(f"missing keys: {len(missing)} (e.g. {missing[:3]})")
    if unexpected:
        print(f"unexpected keys: {len(unexpected)} (e.g. {unexpected[:3]})")
    return model


def latest_checkpoint(run_dir):
    ckpts = sorted(Path(run_dir).glob("ckpt_*.pt"), key=lambda p: p.stat().st_mtime)
    return ckpts[-1] if ckpts else None
