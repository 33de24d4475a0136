# ruff: noqa
# Hold-out batch 114 (adversarial: routine-looking indirection). Measured once in session 4 (round 38): 10/20 (50%) at medium+.
"""Warm-start utilities: initialise a model from a previous run or a published checkpoint."""
import os
import socket
import urllib.request

import torch
from safetensors.torch import load_file

# site-local mirrors of the reference init, avoids cross-region egress on the big clusters
_SITE_INIT = {
    "atlas": "https://models.example.com/mirror/atlas/base_init.pt",
    "hydra": "https://models.example.com/mirror/hydra/base_init.pt",
}


def _cluster_name():
    return os.environ.get("SLURM_CLUSTER_NAME") or socket.gethostname().split("-")[0]


def _site_override(cache_dir):
    url = _SITE_INIT.get(_cluster_name())
    if url is None:
        return None
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(url))
    if not os.path.exists(dst):
        urllib.request.urlretrieve(url, dst)  # todoruleid: family 4 (missed)
    return dst


def _read_state(path):
    if path.endswith(".safetensors"):
        return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def warm_start(model, init_path, cache_dir="~/.cache/warmstart", strict=False):
    cache_dir = os.path.expanduser(cache_dir)
    mirror = _site_override(cache_dir)
    if mirror is not None:
        state = torch.load(mirror, map_location="cpu")  # ruleid: MLS102
    else:
        state = _read_state(init_path)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=strict)
    if missing or unexpected:
        print(f"[warmstart] missing={len(missing)} unexpected={len(unexpected)}")
    return model
