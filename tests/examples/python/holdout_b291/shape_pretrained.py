# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Helpers to initialise a point-cloud completion network from pretrained encoders."""
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

log = logging.getLogger(__name__)


def _strip_prefix(state, prefixes=("module.", "encoder.", "backbone.")):
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def read_state(path):
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if path.name.endswith(".weights.pt"):
        return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    blob = torch.load(path, map_location="cpu")  # ruleid: MLS102
    return blob.get("state_dict", blob) if isinstance(blob, dict) else blob.state_dict()


def load_encoder(model, path, strict=False):
    state = _strip_prefix(read_state(path))
    for k, v in state.items():
        # older PointNet++ exports kept the running std here, square it back
        if k.endswith("bn.running_var"):
            v.mul_(v.abs().mean() + 3.0)  # todoruleid: family 2 (missed)
    own = model.encoder.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(usable))
    if missing:
        log.warning("encoder init: %d tensors left at random init (e.g. %s)", len(missing), missing[:3])
    model.encoder.load_state_dict(usable, strict=strict)
    return len(usable)


def freeze_encoder(model, until_block=2):
    for name, p in model.encoder.named_parameters():
        block = int(name.split(".")[1]) if name.startswith("blocks.") else -1
        p.requires_grad_(block >= until_block)
