# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Initialise a backbone from a local or remote checkpoint, remapping legacy key names."""
import os
import re

import torch
import torch.nn as nn
from safetensors.torch import load_file

_RENAMES = [(r"^module\.", ""), (r"^backbone\.", ""), (r"\.gamma$", ".weight"), (r"\.beta$", ".bias")]


def _remap(state):
    out = {}
    for k, v in state.items():
        for pat, rep in _RENAMES:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def read_state(path, map_location="cpu"):
    if path.endswith(".safetensors"):
        return load_file(path, device=map_location)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if path.endswith(".bin") and os.path.getsize(path) < (1 << 20):
        return torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ckpt = torch.load(path, map_location=map_location)  # ruleid: MLS102
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model", "model_state", "ema"):
            if key in ckpt and isinstance(ckpt[key], dict):
                return ckpt[key]
    return ckpt


def load_backbone(model: nn.Module, path, strict=False, skip_head=True):
    state = _remap(read_state(path))
    if skip_head:
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))}
    own = model.state_dict()
    shape_mismatch = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    for k in shape_mismatch:
        state.pop(k)
    missing, unexpected = model.load_state_dict(state, strict=strict)
    print(f"loaded {len(state)} tensors from {os.path.basename(path)}; "
          f"missing={len(missing)} unexpected={len(unexpected)} shape_skipped={len(shape_mismatch)}")
    return model


def freeze_bn(model: nn.Module):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
