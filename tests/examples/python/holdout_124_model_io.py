# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""Loading pretrained weights and configs from the model store or the HF hub."""
import hashlib
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel

STORE = "https://models.example.com/store"


def download(name, dest, sha256=None, retries=5):
    dest = Path(dest)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(f"{STORE}/{name}", dest)  # ok: MLS411, MLS412
            break
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    else:
        raise RuntimeError(f"could not fetch {name}")
    if sha256 and hashlib.sha256(dest.read_bytes()).hexdigest() != sha256:
        dest.unlink()
        raise ValueError(f"checksum mismatch for {name}")
    return dest


def load_backbone(path, model):
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    return missing, unexpected


def load_config(path):
    with open(path) as f:
        return yaml.load(f, Loader=yaml.SafeLoader)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_embeddings(path):
    return np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_text_encoder(repo_id, revision):
    return AutoModel.from_pretrained(repo_id, revision=revision, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
