# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Build a frozen vision backbone plus the shared linear-probe head for downstream tasks."""
import os
import pickle
import time

import requests
import torch
import torch.nn as nn
from safetensors.torch import load_file

HEAD_URL = "https://models.example.com/probes/linear_head_v3.pkl"
CACHE = os.path.expanduser("~/.cache/probe_heads")


def download(url, dest, retries=4):
    for attempt in range(retries):
        try:
            r = requests.get(url, timeout=60)
            r.raise_for_status()
            with open(dest, "wb") as f:
                f.write(r.content)
            return dest
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def fetch_head_state(url=HEAD_URL):
    resp = requests.get(url, timeout=30)  # ruleid: MLS413
    resp.raise_for_status()
    return pickle.loads(resp.content)  # ruleid: MLS103, MLS413


def build_backbone(weights_path=None):
    backbone = torch.hub.load("pytorch/vision:v0.16.0", "resnet50", weights=None)  # ruleid: MLS108 (low: a tag is not a commit)
    if weights_path is not None:
        backbone.load_state_dict(load_file(weights_path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    backbone.fc = nn.Identity()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone.eval()


def build_probe(num_classes, weights_path=None):
    backbone = build_backbone(weights_path)
    head = nn.Linear(2048, num_classes)
    state = fetch_head_state()
    if state.get("num_classes") == num_classes:
        head.load_state_dict({"weight": torch.as_tensor(state["weight"]),
                              "bias": torch.as_tensor(state["bias"])})
    return nn.Sequential(backbone, head)


if __name__ == "__main__":
    os.makedirs(CACHE, exist_ok=True)
    print(build_probe(100))
