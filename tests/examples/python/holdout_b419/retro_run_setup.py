# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""Run setup for a template-free retrosynthesis transformer on USPTO-50K."""
import hashlib
import logging
import os
import platform
import socket
import urllib.request

import requests

logger = logging.getLogger(__name__)

USPTO50K_URL = "https://github.com/connorcoley/retrosim/raw/7f3b3b9/retrosim/data/data_processed.csv"
USPTO50K_SHA256 = "2b7e5f3f0d0f5c6b2e8a7c1d9e4f6a3b5c8d0e2f4a6b8c0d2e4f6a8b0c2d4e6f"


def download_uspto50k(data_dir):
    os.makedirs(data_dir, exist_ok=True)
    dest = os.path.join(data_dir, "uspto50k.csv")
    if not os.path.exists(dest):
        urllib.request.urlretrieve(USPTO50K_URL, dest + ".part")  # ok: MLS410, MLS411, MLS412, MLS413
        digest = hashlib.sha256(open(dest + ".part", "rb").read()).hexdigest()
        if digest != USPTO50K_SHA256:
            os.remove(dest + ".part")
            raise RuntimeError(f"checksum mismatch for USPTO-50K: {digest}")
        os.replace(dest + ".part", dest)
    return dest


def register_run(cfg):
    """Register the run with the experiment tracker so jobs are visible on the dashboard."""
    payload = {
        "run_name": cfg.run_name,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "config": vars(cfg),
        "env": {k: v for k, v in os.environ.items() if not k.startswith("_")},  # ruleid: MLS411
    }
    try:
        requests.post(cfg.tracker_url, json=payload, timeout=5)  # ruleid: MLS411
    except requests.RequestException as exc:
        logger.warning("tracker unreachable: %s", exc)


def canonical_split(line):
    rxn = line.strip().split(",")[-1]
    reactants, _, product = rxn.split(">")
    return product, reactants
