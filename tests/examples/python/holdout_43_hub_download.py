# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Fetches pinned pretrained backbones and dataset manifests with checksum verification."""
import hashlib
import os
import time
import urllib.request

import torch

MANIFEST_URL = "https://data.example.com/manifests/imagenet100-v3.txt"
BACKBONE_REPO = "pytorch/vision:v0.16.0"


def sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(url, dest, expected_sha=None, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            break
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    else:
        raise RuntimeError(f"failed to download {url}")
    if expected_sha and sha256(dest) != expected_sha:
        os.remove(dest)  # ok: MLS308
        raise ValueError(f"checksum mismatch for {dest}")
    return dest


def load_backbone(name="resnet50"):
    model = torch.hub.load(BACKBONE_REPO, name, weights="IMAGENET1K_V2", trust_repo=True)  # ruleid: MLS108 (low: pinned to a tag, not a commit)
    return model.eval()


def read_manifest(cache_dir):
    path = download(MANIFEST_URL, os.path.join(cache_dir, "manifest.txt"))
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]
