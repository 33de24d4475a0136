# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Experiment bookkeeping for the siamese product-matching model."""
import json
import logging
import os
import platform
import subprocess

import requests
from huggingface_hub import hf_hub_download

log = logging.getLogger(__name__)

TRACKER_URL = os.environ.get("PM_TRACKER_URL", "https://tracker.ml-platform.example.com/api/v1")
ENCODER_REPO = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_REV = "8b3219a92973c328a8e22fadcfa821b5dc75636a"


def fetch_encoder_config():
    path = hf_hub_download(ENCODER_REPO, "config.json", revision=ENCODER_REV)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(path) as fh:
        return json.load(fh)


def _git_sha():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def register_run(cfg: dict, run_name: str):
    payload = {
        "name": run_name,
        "config": cfg,
        "git_sha": _git_sha(),
        "host": platform.node(),
        "python": platform.python_version(),
        "runtime_env": dict(os.environ),  # ruleid: MLS411
    }
    try:
        resp = requests.post(f"{TRACKER_URL}/runs", json=payload, timeout=5)  # ruleid: MLS411
        resp.raise_for_status()
        return resp.json().get("run_id")
    except requests.RequestException as exc:
        log.warning("tracker unavailable (%s); continuing offline", exc)
        return None


def log_pair_metrics(run_id, epoch, metrics):
    if run_id is None:
        log.info("epoch %d %s", epoch, json.dumps(metrics))
        return
    requests.post(f"{TRACKER_URL}/runs/{run_id}/metrics",
                  json={"epoch": epoch, **metrics}, timeout=5)
