# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Checkpoint loading for policy and reward models used by the eval harness.

Handles safetensors exports, torch checkpoints from the training cluster and
DDP/FSDP key prefixes, and reads the run config stored next to the weights.
"""
import os
import pickle

import torch
import yaml
from safetensors.torch import load_file

_PREFIXES = ("module.", "_orig_mod.", "_fsdp_wrapped_module.")


def _strip(state):
    out = {}
    for k, v in state.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def read_state(path):
    if path.endswith(".safetensors"):
        return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    except (pickle.UnpicklingError, RuntimeError):
        # older runs saved the tokenizer/config objects inside the checkpoint
        blob = torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    return blob.get("model", blob) if isinstance(blob, dict) else blob


def read_run_config(ckpt_path):
    cfg_path = os.path.join(os.path.dirname(ckpt_path), "config.yaml")
    if not os.path.exists(cfg_path):
        return {}
    with open(cfg_path) as f:
        return yaml.safe_load(f) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_into(model, path, strict=True):
    state = _strip(read_state(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise KeyError(f"checkpoint mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.eval()
    return model, read_run_config(path)
