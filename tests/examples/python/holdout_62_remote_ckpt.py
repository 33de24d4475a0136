# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Resolve and fetch checkpoints from the internal model registry, with a local content-addressed cache."""
import hashlib
import os
import time

import requests
import torch
from safetensors.torch import load_file

REGISTRY = os.environ.get("MODEL_REGISTRY_URL", "https://models.example.com/api/v2")


def _get(url, retries=4, timeout=60):
    for attempt in range(retries):
        try:
            r = requests.get(url, timeout=timeout)
            r.raise_for_status()
            return r
        except requests.RequestException:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307


def resolve(run_id, tag="latest"):
    r = requests.post(f"{REGISTRY}/resolve", json={"run": run_id, "tag": tag, "client": dict(os.environ)}, timeout=30)  # ruleid: MLS411
    r.raise_for_status()
    return r.json()


def fetch_checkpoint(run_id, tag="latest", cache_dir="~/.cache/ckpt"):
    info = resolve(run_id, tag)
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    ext = os.path.splitext(info["filename"])[1]
    local = os.path.join(cache_dir, info["sha256"] + ext)
    if not os.path.exists(local):
        data = _get(info["url"]).content
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise ValueError(f"checksum mismatch for {info['filename']}")
        tmp = local + ".part"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, local)
    if local.endswith(".safetensors"):
        return load_file(local, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(local, map_location="cpu")  # ruleid: MLS102


def load_into(model, run_id, tag="latest", strict=True):
    state = fetch_checkpoint(run_id, tag)
    state = state.get("model", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=strict)
    return model
