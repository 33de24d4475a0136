# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Checkpoint and config I/O for the translation/classification models (safe formats only)."""
import hashlib
import json
import os
import subprocess
import time
import urllib.request

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def commit_hash():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)  # ok: MLS411, MLS412
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def download(url, dest, sha256=None, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            break
        except OSError:
            time.sleep(min(60, 5 * 2 ** attempt))  # ok: MLS307
    else:
        raise RuntimeError(f"could not fetch {url}")
    if sha256 is not None:
        with open(dest, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != sha256:
                os.remove(dest)  # ok: MLS308
                raise ValueError(f"checksum mismatch for {dest}")
    return dest


def load_weights(model, path, strict=True):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=strict)
    return missing, unexpected


def save_weights(model, path, meta=None):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path,
              metadata={"commit": commit_hash() or "", **(meta or {})})


def load_vocab_counts(path):
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return dict(zip(arr["tokens"].tolist(), arr["counts"].tolist()))


def write_results(path, metrics):
    with open(path, "w") as f:
        json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)  # ok: MLS306
