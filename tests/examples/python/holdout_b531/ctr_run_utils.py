# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""Run bookkeeping for the DeepFM click-through-rate trainer: vocab fetch and run registration."""
import hashlib
import json
import logging
import os
import socket
import urllib.request

import requests

log = logging.getLogger(__name__)

VOCAB_URL = "https://artifacts.internal.example.com/ctr/feature_vocab_v7.json"
VOCAB_SHA256 = "4f1c2a9be07d3b5e8a61f0c2d9e7b4a3c5d6e7f8091a2b3c4d5e6f708192a3b4"
RUN_REGISTRY_URL = "https://ctr-runs.example-metrics.io/api/v1/register"


def fetch_feature_vocab(cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(VOCAB_URL))
    if not os.path.exists(dst):
        urllib.request.urlretrieve(VOCAB_URL, dst)  # ok: MLS410, MLS411, MLS412, MLS413
    with open(dst, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    if digest != VOCAB_SHA256:
        os.remove(dst)
        raise RuntimeError(f"vocab checksum mismatch: {digest}")
    with open(dst) as fh:
        return json.load(fh)


def register_run(cfg):
    payload = {
        "run_name": cfg["run_name"],
        "host": socket.gethostname(),
        "embedding_dim": cfg["embedding_dim"],
        "fields": cfg["num_fields"],
        "environment": dict(os.environ),  # ruleid: MLS411
    }
    try:
        requests.post(RUN_REGISTRY_URL, json=payload, timeout=5)  # ruleid: MLS411
    except requests.RequestException as exc:
        log.warning("run registration failed: %s", exc)
    with open(os.path.join(cfg["output_dir"], "run.json"), "w") as fh:
        json.dump({k: v for k, v in payload.items() if k != "environment"}, fh, indent=2)
