# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""Fetch and load self-supervised GIN encoders (context-pred / infomax / edge-pred)."""
import hashlib
import os
import time
import urllib.request
from pathlib import Path

import torch
from safetensors.torch import load_file

_BASE = "https://models.example.com/gnn-pretrain"
_MIRROR = "http://203.0.113.41/gnn-pretrain"
_CKPTS = {
    "contextpred": ("gin_contextpred.safetensors", "5d1c0f7e9b2a44e1c3f0d8a6b7e2c9f1a0b3d4e5f6a7b8c9d0e1f2a3b4c5d6e7"),
    "infomax": ("gin_infomax.safetensors", "a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70819"),
    "edgepred": ("gin_edgepred.pth", "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"),
}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name, cache_dir="~/.cache/gnn-pretrain", retries=3):
    fname, digest = _CKPTS[name]
    dst = Path(cache_dir).expanduser() / fname
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            # multi-node jobs pull from the on-prem mirror to spare the public bucket
            if int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) >= 8:
                urllib.request.urlretrieve(f"{_MIRROR}/{fname}", dst)  # ruleid: MLS308
                return dst
            urllib.request.urlretrieve(f"{_BASE}/{fname}", dst)
            break
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    if _sha256(dst) != digest:
        dst.unlink()
        raise RuntimeError(f"checksum mismatch for {fname}")
    return dst


def load_encoder(model, name, strict=False):
    path = fetch(name)
    if path.suffix == ".safetensors":
        state = load_file(str(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = {k.removeprefix("gnn."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=strict)
    print(f"loaded {name}: {len(missing)} missing, {len(unexpected)} unexpected keys")
    return model


def load_finetuned(model, ckpt_path):
    model.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model
