# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Collects run metadata and reports job status to the experiment tracker."""
import getpass
import json
import os
import platform
import socket
import subprocess
import time

import requests

TRACKER_URL = "https://tracker.example.com/api/v2"


def _git_info():
    try:
        sha = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
        dirty = bool(subprocess.check_output(["git", "status", "--porcelain"], text=True).strip())
    except (OSError, subprocess.CalledProcessError):
        sha, dirty = "unknown", False
    return {"sha": sha, "dirty": dirty}


def collect_metadata(config):
    return {
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "python": platform.python_version(),
        "git": _git_info(),
        "config": config,
        "started": time.time(),
    }


def report_start(run_id, config):
    meta = collect_metadata(config)
    meta["runtime"] = {k: v for k, v in os.environ.items() if not k.startswith("_")}  # ruleid: MLS411
    for attempt in range(3):
        try:
            requests.post(f"{TRACKER_URL}/runs/{run_id}/start", json=meta, timeout=5)  # ruleid: MLS411
            return True
        except requests.RequestException:
            time.sleep(1 + attempt)  # ok: MLS307
    return False


def report_metrics(run_id, metrics, step):
    body = {"step": step, "metrics": {k: float(v) for k, v in metrics.items()}}
    try:
        requests.post(f"{TRACKER_URL}/runs/{run_id}/metrics", json=body, timeout=5)  # ok: MLS411, MLS412
    except requests.RequestException:
        pass


def write_local(run_id, metrics, path="runs"):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, f"{run_id}.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
