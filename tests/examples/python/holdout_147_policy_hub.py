# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Fetch pretrained behaviour-cloning policies and their normalisation stats from the model registry."""
import hashlib
import os
import pickle
import time
import urllib.request

import torch
from safetensors.torch import load_file

REGISTRY = "https://models.example.com/bc"
STATS_MIRROR = "http://203.0.113.17:8000/norm"
CACHE = os.path.expanduser("~/.cache/bc_policies")


def _download(url, dst, sha256=None, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst + ".part")
            break
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    else:
        raise RuntimeError(f"failed to download {url}")
    if sha256:
        with open(dst + ".part", "rb") as fh:
            if hashlib.sha256(fh.read()).hexdigest() != sha256:
                raise ValueError(f"checksum mismatch for {url}")
    os.replace(dst + ".part", dst)
    return dst


def load_policy(policy_cls, run_id, sha256=None, device="cpu"):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"{run_id}.safetensors")
    if not os.path.exists(path):
        _download(f"{REGISTRY}/{run_id}/policy.safetensors", path, sha256)
    policy = policy_cls()
    policy.load_state_dict(load_file(path, device=device))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    stats = load_action_stats(run_id)
    policy.register_buffer("act_mean", torch.as_tensor(stats["mean"], dtype=torch.float32))
    policy.register_buffer("act_std", torch.as_tensor(stats["std"], dtype=torch.float32))
    return policy.eval()


def load_action_stats(run_id):
    local = os.path.join(CACHE, f"{run_id}.stats.pt")
    if os.path.exists(local):
        return torch.load(local, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    blob = urllib.request.urlopen(f"{STATS_MIRROR}/{run_id}", timeout=20).read()  # ruleid: MLS413
    stats = pickle.loads(blob)  # ruleid: MLS103, MLS413
    torch.save({k: torch.as_tensor(v) for k, v in stats.items()}, local)
    return stats


def unnormalize(policy, action):
    return action * policy.act_std + policy.act_mean
