# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Download and verify pretrained assets (tokenizer, backbone weights, configs) for a run."""
import hashlib
import subprocess
import time
import urllib.request
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer

ASSETS = {
    "backbone.safetensors": ("https://models.example.com/vit-b16/backbone.safetensors",
                             "3f1c0d5e9a7b2c4d6e8f00112233445566778899aabbccddeeff001122334455"),
}


def download(url, dest, sha256, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            break
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    digest = hashlib.sha256(Path(dest).read_bytes()).hexdigest()
    if digest != sha256:
        Path(dest).unlink()  # ok: MLS308
        raise RuntimeError(f"checksum mismatch for {dest}")
    return dest


def load_run_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fetch_all(cache="assets"):
    Path(cache).mkdir(exist_ok=True)
    for name, (url, sha) in ASSETS.items():
        dest = Path(cache) / name
        if not dest.exists():
            download(url, dest, sha)
    weights = load_file(str(Path(cache) / "backbone.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tok = AutoTokenizer.from_pretrained("bert-base-uncased", revision="86b5e0934494bd15c9632b12f734a8a67f723594", trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    dino = torch.hub.load("facebookresearch/dinov2:v1.0", "dinov2_vits14", trust_repo=True)  # ruleid: MLS108 (low: pinned to a tag, not a commit)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    return weights, tok, dino, commit
