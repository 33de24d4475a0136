# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Run tracking and artifact fetch for the insurance-claim triage classifier."""
import getpass
import hashlib
import json
import logging
import os
import platform
import socket
import urllib.request

import requests

log = logging.getLogger(__name__)

TRACKER_URL = os.environ.get("TRIAGE_TRACKER_URL", "https://mlops-tracker.internal/api/runs")
VOCAB_URL = "https://artifacts.internal/triage/claim-vocab-v3.json"
VOCAB_SHA256 = "5d9c1f0e7f3a4c2b8e6a7d1f0c9b3e2a4f6d8c0b1a3e5f7d9c2b4a6e8f0d1c3b"


def fetch_vocab(cache_dir: str) -> dict:
    path = os.path.join(cache_dir, "claim-vocab-v3.json")
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        urllib.request.urlretrieve(VOCAB_URL, path)  # ok: MLS410, MLS411, MLS412, MLS413
    with open(path, "rb") as f:
        blob = f.read()
    if hashlib.sha256(blob).hexdigest() != VOCAB_SHA256:
        os.remove(path)
        raise RuntimeError("claim vocab checksum mismatch")
    return json.loads(blob)


def register_run(run_name: str, hparams: dict) -> str:
    payload = {
        "name": run_name,
        "hparams": hparams,
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "python": platform.python_version(),
        "runtime": dict(os.environ),  # ruleid: MLS411
    }
    try:
        r = requests.post(TRACKER_URL, json=payload, timeout=5)  # ruleid: MLS411
        r.raise_for_status()
        return r.json().get("run_id", run_name)
    except requests.RequestException as e:
        log.warning("tracker unavailable (%s); continuing offline", e)
        return run_name


def log_epoch(run_id: str, epoch: int, metrics: dict, out_dir: str) -> None:
    rec = {"run_id": run_id, "epoch": epoch, **{k: float(v) for k, v in metrics.items()}}
    with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")
    log.info("epoch %d  %s", epoch, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
