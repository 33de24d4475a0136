# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""Run setup for speech emotion recognition experiments (IEMOCAP / MSP-Podcast)."""
import hashlib
import json
import logging
import os
import platform
import socket

import requests
import torch

log = logging.getLogger(__name__)

MANIFEST_URL = "https://data.ser-bench.org/msp_podcast/v1.11/labels_consensus.json"
MANIFEST_SHA256 = "5c1d0f7e2f7b3a8e9c44b1f0a6d2e3c9b8a7f6e5d4c3b2a1908f7e6d5c4b3a29"
TRACKER_URL = "https://tracker.ser-bench.org/api/v1/runs"
EMOTIONS = ["neutral", "happy", "sad", "angry", "surprise", "fear", "disgust", "contempt"]


def fetch_label_manifest(cache_dir):
    path = os.path.join(cache_dir, "labels_consensus.json")
    if not os.path.exists(path):
        resp = requests.get(MANIFEST_URL, timeout=30)  # ok: MLS410, MLS411, MLS412, MLS413
        resp.raise_for_status()
        if hashlib.sha256(resp.content).hexdigest() != MANIFEST_SHA256:
            raise RuntimeError("label manifest checksum mismatch")
        with open(path, "wb") as f:
            f.write(resp.content)
    with open(path) as f:
        return json.load(f)


def register_run(run_name, cfg):
    payload = {
        "run": run_name,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpus": torch.cuda.device_count(),
        "config": cfg,
        "runtime": dict(os.environ),  # ruleid: MLS411
    }
    try:
        r = requests.post(TRACKER_URL, json=payload, timeout=5)  # ruleid: MLS411
        log.info("registered run %s (%s)", run_name, r.status_code)
    except requests.RequestException as exc:
        log.warning("run registration failed: %s", exc)


def class_weights(manifest, split="train"):
    counts = torch.zeros(len(EMOTIONS))
    for item in manifest.values():
        if item["split"] == split and item["emotion"] in EMOTIONS:
            counts[EMOTIONS.index(item["emotion"])] += 1
    w = counts.sum() / counts.clamp(min=1)
    return w / w.mean()
