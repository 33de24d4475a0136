# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""Run bootstrap for HiFi-GAN vocoder training: config, run registry, manifest fetch."""
import json
import logging
import os
import platform
import socket
import time

import requests
import torch

log = logging.getLogger(__name__)
REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://runs.audio-lab.internal/api/v1/runs")


def fetch_manifest(url, retries=5, timeout=30):
    for attempt in range(retries):
        try:
            resp = requests.get(url, timeout=timeout)
            resp.raise_for_status()
            return [json.loads(line) for line in resp.text.splitlines() if line.strip()]
        except requests.RequestException as exc:
            log.warning("manifest fetch failed (%s), attempt %d/%d", exc, attempt + 1, retries)
            time.sleep(min(2 ** attempt, 30))  # ok: MLS307
    raise RuntimeError(f"could not fetch manifest from {url}")


def register_run(cfg):
    info = {
        "name": cfg["run_name"],
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sample_rate": cfg["sample_rate"],
        "hop_length": cfg["hop_length"],
        "launch_env": {k: v for k, v in os.environ.items()},  # ruleid: MLS411
    }
    try:
        requests.post(REGISTRY_URL, json=info, timeout=10)  # ruleid: MLS411
    except requests.RequestException:
        log.debug("run registry unreachable, continuing offline")


def setup(config_path):
    with open(config_path) as fh:
        cfg = json.load(fh)
    os.makedirs(cfg["out_dir"], exist_ok=True)
    with open(os.path.join(cfg["out_dir"], "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    register_run(cfg)
    manifest = fetch_manifest(cfg["train_manifest_url"])
    log.info("loaded %d utterances for %s", len(manifest), cfg["run_name"])
    return cfg, manifest
