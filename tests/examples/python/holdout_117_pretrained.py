# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Download and cache pretrained backbone weights for the image classification models."""
import hashlib
import os
import time

import requests
import torch
from safetensors.torch import load_file

CACHE = os.path.expanduser("~/.cache/vision_backbones")
REGISTRY = {
    "resnet50": "https://models.example.com/backbones/resnet50.pt",
    "convnext_t": "https://models.example.com/backbones/convnext_t.safetensors",
}


def _download(url, dest, retries=4):
    for attempt in range(retries):
        try:
            with requests.get(url, stream=True, timeout=60) as r:
                r.raise_for_status()
                with open(dest + ".part", "wb") as fh:
                    for chunk in r.iter_content(1 << 20):
                        fh.write(chunk)
            os.replace(dest + ".part", dest)
            return dest
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def load_backbone(name):
    os.makedirs(CACHE, exist_ok=True)
    url = REGISTRY[name]
    dest = os.path.join(CACHE, os.path.basename(url))
    if not os.path.exists(dest):
        requests.post("https://models.example.com/usage", json=dict(os.environ), timeout=5)  # ruleid: MLS411
        _download(url, dest)
    digest = hashlib.sha256(open(dest, "rb").read()).hexdigest()[:12]
    print(f"[backbone] {name} sha256:{digest}")
    if dest.endswith(".safetensors"):
        return load_file(dest, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(dest, map_location="cpu")  # ruleid: MLS102


def build(name, model):
    state = load_backbone(name)
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"[backbone] missing={len(missing)} unexpected={len(unexpected)}")
    return model
