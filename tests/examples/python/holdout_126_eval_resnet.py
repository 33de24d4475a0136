# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Evaluate ResNet checkpoints on a held-out split and write a results file."""
import argparse
import hashlib
import json
import subprocess
import time
import urllib.request

import torch
import torchvision
import yaml
from safetensors.torch import load_file

from augment import FolderDataset

INDEX_URL = "https://data.example.com/eval/val_index.json"
INDEX_SHA256 = "9f2c3a5e0d4b7c1e8a6f5d3b2c1a0e9f8d7c6b5a4e3d2c1b0a9f8e7d6c5b4a39"


def fetch_index(retries: int = 4) -> list:
    for attempt in range(retries):
        try:
            blob = urllib.request.urlopen(INDEX_URL, timeout=30).read()  # ok: MLS411, MLS412
            break
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    else:
        raise RuntimeError("could not fetch eval index")
    if hashlib.sha256(blob).hexdigest() != INDEX_SHA256:
        raise ValueError("eval index checksum mismatch")
    return json.loads(blob)


def load_model(cfg: dict, ckpt: str):
    if cfg.get("hub"):
        return torch.hub.load("pytorch/vision:v0.16.0", cfg["arch"], weights=None)  # ruleid: MLS108 (low: a tag is not a commit)
    model = getattr(torchvision.models, cfg["arch"])(num_classes=cfg["num_classes"])
    if ckpt.endswith(".safetensors"):
        state = load_file(ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def evaluate(model, loader) -> dict:
    correct = total = 0
    for x, y in loader:
        correct, total = correct + (model(x).argmax(-1) == y).sum().item(), total + y.numel()
    return {"top1": correct / max(total, 1), "n": total}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--ckpt", required=True)
    args = ap.parse_args()
    with open(args.config) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    model = load_model(cfg, args.ckpt)
    loader = torch.utils.data.DataLoader(FolderDataset(cfg["val_root"], cfg["classes"]), batch_size=128)
    results = {"commit": commit, "n_index": len(fetch_index()), **evaluate(model, loader)}
    with open("results.json", "w") as fh:
        json.dump(results, fh, indent=2)  # ok: MLS306


if __name__ == "__main__":
    main()
