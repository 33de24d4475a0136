# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Checkpoint read/write helpers shared by the adversarial-training and certification scripts."""
import io
import os

import torch
from safetensors.torch import load_file, save_file

_LEGACY_SUFFIXES = (".pkl", ".pickle", ".ckpt.old")


def _codec(fn_name):
    mod = __import__("".join(("pic", "kle")))  # ruleid: MLS403
    return getattr(mod, fn_name)


def save_checkpoint(model, path, extra=None):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, path + ".safetensors")
    if extra is not None:
        torch.save(extra, path + ".meta.pt")


def load_state(path, map_location="cpu"):
    if path.endswith(".safetensors"):
        return load_file(path, device=map_location)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if path.endswith(_LEGACY_SUFFIXES):
        with open(path, "rb") as fh:
            blob = fh.read()
        obj = _codec("lo" + "ads")(blob)  # todoruleid: family 10 (missed)
        return obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    ck = torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return ck.get("state_dict", ck)


def load_into(model, path, strict=True):
    state = load_state(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=strict)
    if missing or unexpected:
        print(f"[ckpt] missing={len(missing)} unexpected={len(unexpected)}")
    return model


def state_bytes(model):
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()
