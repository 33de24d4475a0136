# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Reproducibility helpers: global seeding, DataLoader worker seeding, run provenance."""
import hashlib
import os
import random
import subprocess
import time
import urllib.request

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # benign look-alike


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def loader_generator(seed: int):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return g


def commit_hash():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip() or "nogit"
    except (OSError, subprocess.TimeoutExpired):
        return "nogit"


def download_with_retry(url, dest, sha256=None, attempts=5):
    for i in range(attempts):
        try:
            urllib.request.urlretrieve(url, dest)
            if sha256 and hashlib.sha256(open(dest, "rb").read()).hexdigest() != sha256:
                raise IOError("checksum mismatch")
            return dest
        except IOError:
            time.sleep(min(60, 2 ** i))  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")
