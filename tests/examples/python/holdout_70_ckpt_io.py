# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Checkpoint and config I/O: verified downloads, safe tensor loading, YAML configs."""
import hashlib
import os
import time
import urllib.request

import numpy as np
import torch
import yaml
from safetensors.torch import load_file


def download(url, dest, sha256=None, retries=4, timeout=30):
    for attempt in range(retries):
        try:
            tmp = dest + ".part"
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:  # ok: MLS411, MLS412
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            if sha256 and hashlib.sha256(open(tmp, "rb").read()).hexdigest() != sha256:
                raise IOError(f"checksum mismatch for {url}")
            os.replace(tmp, dest)
            return dest
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307
    return dest


def load_weights(path, map_location="cpu"):
    if path.endswith(".safetensors"):
        return load_file(path, device=map_location)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ckpt = torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return ckpt.get("model", ckpt)


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_embeddings(path):
    arr = np.load(path, allow_pickle=False, mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.from_numpy(np.ascontiguousarray(arr))


def resume(model, optimizer, path):
    if not os.path.exists(path):
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.load_state_dict(state["optim"])
    return int(state["step"])
