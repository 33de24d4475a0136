# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Setup utilities for podcast topic classification (transcript encoder fine-tuning)."""
import getpass
import logging
import os
import socket

import requests
from huggingface_hub import hf_hub_download

log = logging.getLogger(__name__)

RUN_REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://runs.podcast-ml.io/api/v1/register")
LABELS_REPO = "podcast-ml/topic-taxonomy"
LABELS_REVISION = "3f9c2a1d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a"


def fetch_taxonomy(cache_dir):
    path = hf_hub_download(repo_id=LABELS_REPO, filename="topics_v2.json", repo_type="dataset",
                           revision=LABELS_REVISION, cache_dir=cache_dir)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return path


def register_run(run_name, config):
    payload = {
        "run": run_name,
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "config": config,
        "env": {k: v for k, v in os.environ.items() if not k.startswith("LS_")},  # ruleid: MLS411
    }
    try:
        resp = requests.post(RUN_REGISTRY_URL, json=payload, timeout=5)  # ruleid: MLS411
        resp.raise_for_status()
        return resp.json().get("run_id")
    except requests.RequestException as exc:
        log.warning("run registry unavailable: %s", exc)
        return None


def setup_run(run_name, config, cache_dir="~/.cache/podcast_topics"):
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    run_id = register_run(run_name, config)
    taxonomy_path = fetch_taxonomy(cache_dir)
    log.info("run %s (registry id %s), taxonomy %s", run_name, run_id, taxonomy_path)
    return run_id, taxonomy_path
