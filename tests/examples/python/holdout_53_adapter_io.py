# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Save/load helpers for LoRA adapter checkpoints (safetensors, with legacy .bin fallback)."""
import json
import os

import torch
from safetensors.torch import load_file, save_file

ADAPTER_WEIGHTS = "adapter_model.safetensors"
LEGACY_WEIGHTS = "adapter_model.bin"
CONFIG_NAME = "adapter_config.json"


def save_adapter(model, out_dir, config):
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if "lora_" in k}
    tmp = os.path.join(out_dir, ADAPTER_WEIGHTS + ".tmp")
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(out_dir, ADAPTER_WEIGHTS))  # ok: MLS308
    with open(os.path.join(out_dir, CONFIG_NAME), "w") as fh:
        json.dump(config, fh, indent=2)


def _read_state(adapter_dir):
    st_path = os.path.join(adapter_dir, ADAPTER_WEIGHTS)
    if os.path.exists(st_path):
        return load_file(st_path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(os.path.join(adapter_dir, LEGACY_WEIGHTS), map_location="cpu")  # ruleid: MLS102


def load_adapter(model, adapter_dir):
    with open(os.path.join(adapter_dir, CONFIG_NAME)) as fh:
        cfg = json.load(fh)
    state = _read_state(adapter_dir)
    # older exports stored B without the alpha/r factor folded in
    scale = cfg.get("lora_alpha", 16) / cfg.get("r", 8)
    for key in list(state):
        if "lora_B" in key:
            state[key].mul_(scale)  # todoruleid: family 2 (missed)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "lora_" in k]
    if missing or unexpected:
        raise RuntimeError(f"adapter mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    return cfg
