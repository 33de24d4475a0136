# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Resolve, download and load pinned protein-LM checkpoints from the lab model registry."""
import hashlib
import os
import pathlib
import time
import urllib.request

import yaml
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForMaskedLM

REGISTRY = "https://models.example.com/plm"


def read_manifest(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fetch(name, sha256, cache="~/.cache/plm", retries=4):
    dest = pathlib.Path(os.path.expanduser(cache)) / f"{name}.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == sha256:
            return dest
        try:
            urllib.request.urlretrieve(f"{REGISTRY}/{name}.safetensors", dest)
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not fetch {name} with matching checksum")


def load_model(manifest_path, entry):
    spec = read_manifest(manifest_path)[entry]
    config = AutoConfig.from_pretrained(spec["base"], revision=spec["revision"])
    model = AutoModelForMaskedLM.from_config(config)
    state = load_file(str(fetch(entry, spec["sha256"])))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"unexpected keys in {entry}: {unexpected[:5]}")
    return model, missing


def hf_baseline(name="facebook/esm2_t6_8M_UR50D", revision="main"):
    return AutoModelForMaskedLM.from_pretrained(name, revision=revision, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def warmup_lr(optimizer, step, base_lr, warmup_steps=1000):
    scale = min(1.0, (step + 1) / warmup_steps)
    for group in optimizer.param_groups:
        group["lr"] = base_lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
