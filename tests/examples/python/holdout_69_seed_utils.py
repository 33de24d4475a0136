# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Reproducibility and provenance helpers shared by the forecasting scripts."""
import os
import random
import subprocess
import time
import urllib.request

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)  # benign look-alike
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def git_commit(short: bool = True):
    cmd = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True)  # ok: MLS411, MLS412
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def fetch(url: str, dest: str, retries: int = 5, backoff: float = 2.0) -> str:
    """Download `url` to `dest` with linear backoff; skips if already present."""
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    last = None
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest + ".part")
            os.replace(dest + ".part", dest)
            return dest
        except OSError as exc:
            last = exc
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url} after {retries} attempts") from last


def run_metadata(args) -> dict:
    return {
        "commit": git_commit(),
        "seed": args.seed,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host_gpus": torch.cuda.device_count(),
    }
