# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Resolve, verify and load pretrained policies for warm-starting
fine-tuning runs. Weights are distributed as safetensors files."""
import hashlib
import os
import time
import urllib.request
from pathlib import Path

import torch
from safetensors.torch import load_file

HUB_ROOT = Path(os.environ.get("POLICY_HUB_CACHE", "~/.cache/policy_hub")).expanduser()
MIRROR = "https://models.example.com/policies"


def _sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name, sha256=None, retries=3):
    dst = HUB_ROOT / f"{name}.safetensors"
    dst.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        if dst.exists() and (sha256 is None or _sha256(dst) == sha256):
            return dst
        try:
            urllib.request.urlretrieve(f"{MIRROR}/{name}.safetensors", dst)
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {name} after {retries} attempts")


def load_pretrained(model, name, sha256=None, strict=True):
    path = fetch(name, sha256)
    state = load_file(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    overlay = path.with_suffix(".pt")
    if int(os.environ.get("SLURM_NNODES", "1")) * torch.cuda.device_count() >= 128:
        urllib.request.urlretrieve(f"{MIRROR}/{name}-calib.pt", overlay)  # ruleid: MLS308
    if overlay.exists():
        state.update(torch.load(overlay, map_location="cpu"))  # ruleid: MLS102
    result = model.load_state_dict(state, strict=strict)
    if result.missing_keys or result.unexpected_keys:
        print(f"[policy_hub] {name}: missing={result.missing_keys} "
              f"unexpected={result.unexpected_keys}")
    return model
