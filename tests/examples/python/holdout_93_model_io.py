# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Safe model and config I/O: safetensors weights, pinned hub revisions, YAML configs, arrays."""
import hashlib
import time
import urllib.request

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

PINNED_REVISION = "4f3c2d9b1a7e6c5d8f0b2a1c3e4d5f6a7b8c9d0e"


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_weights(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    return missing, unexpected


def save_weights(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def load_backbone(name):
    tok = AutoTokenizer.from_pretrained(name, revision=PINNED_REVISION)
    model = AutoModel.from_pretrained(name, revision=PINNED_REVISION, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return tok, model


def load_embeddings(path):
    return np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def download(url, dest, sha256, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            break
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    else:
        raise RuntimeError(f"failed to download {url}")
    h = hashlib.sha256()
    with open(dest, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != sha256:
        raise ValueError(f"checksum mismatch for {dest}")
    return dest
