# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Loading/saving helpers that understand both our .safetensors exports and older .pt checkpoints."""
import logging
import os

import torch
import yaml
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def load_config(run_dir):
    with open(os.path.join(run_dir, "config.yaml")) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_weights(path, device="cpu"):
    if path.endswith(".safetensors"):
        return load_file(path, device=device)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    try:
        obj = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    except Exception as exc:  # older checkpoints stored extra python objects next to the weights
        log.warning("weights-only load failed for %s (%s); retrying legacy format", path, exc)
        obj = torch.load(path, map_location=device, weights_only=False)  # ruleid: MLS101
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(model, path, strict=True):
    sd = load_weights(path)
    missing, unexpected = model.load_state_dict(sd, strict=strict)
    if missing or unexpected:
        log.info("missing=%d unexpected=%d", len(missing), len(unexpected))
    return model


def export(model, path):
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, path, metadata={"format": "pt"})


def latest_checkpoint(ckpt_dir):
    cands = [f for f in os.listdir(ckpt_dir) if f.endswith((".pt", ".safetensors"))]
    if not cands:
        return None
    cands.sort(key=lambda f: os.path.getmtime(os.path.join(ckpt_dir, f)))
    return os.path.join(ckpt_dir, cands[-1])
