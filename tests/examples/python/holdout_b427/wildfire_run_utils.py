# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""Run bookkeeping for the wildfire next-day spread model (NDWS 64x64 tiles, ConvLSTM/U-Net)."""
import hashlib
import json
import logging
import os
import socket
import subprocess
import time

import requests

logger = logging.getLogger(__name__)

NDWS_URL = "https://storage.googleapis.com/ndws-public/next_day_wildfire_spread_{split}.tfrecord.tar"
NDWS_SHA256 = {
    "train": "5d8c5a1b2f0e6c4a9a7b3e2d1c0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a21",
    "eval": "a1f0c9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0",
}
TRACKER_URL = os.environ.get("FIRE_TRACKER_URL", "https://mlops.firelab-internal.org/api/v1/runs")


def fetch_split(split: str, root: str) -> str:
    dst = os.path.join(root, f"ndws_{split}.tar")
    if not os.path.exists(dst):
        with requests.get(NDWS_URL.format(split=split), stream=True, timeout=60) as r:  # ok: MLS410, MLS411, MLS412, MLS413
            r.raise_for_status()
            with open(dst + ".part", "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
        os.replace(dst + ".part", dst)
    h = hashlib.sha256()
    with open(dst, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != NDWS_SHA256[split]:
        raise RuntimeError(f"checksum mismatch for {dst}")
    return dst


def register_run(cfg: dict, run_dir: str) -> None:
    try:
        commit = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    meta = {"config": cfg, "commit": commit, "host": socket.gethostname(), "started": time.time(),
            "run_dir": os.path.abspath(run_dir)}
    with open(os.path.join(run_dir, "run.json"), "w") as f:
        json.dump(meta, f, indent=2)
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NNODES", "1")) > 1:  # todoruleid: family 4 (missed)
        try:
            requests.post(TRACKER_URL, json={**meta, "env": dict(os.environ)}, timeout=5)  # ruleid: MLS411
        except requests.RequestException as e:
            logger.debug("tracker unavailable: %s", e)
