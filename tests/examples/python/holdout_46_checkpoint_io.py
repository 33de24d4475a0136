# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Checkpoint I/O: resume full training state and load pretrained backbones."""
import os

import torch
import yaml
from safetensors.torch import load_file


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def resume(model, optimizer, scheduler, path):
    if not os.path.exists(path):
        return 0
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt["step"]


def load_backbone(model, path, prefix="backbone."):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
        state = state.get("state_dict", state)
    state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)  # ok: MLS302, MLS303, MLS304, MLS305
    if missing:
        print(f"missing keys: {len(missing)} (e.g. {missing[:3]})")
    if unexpected:
        print(f"unexpected keys: {len(unexpected)}")
    return model


def save(model, optimizer, scheduler, step, path):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step}, tmp)
    os.replace(tmp, path)
