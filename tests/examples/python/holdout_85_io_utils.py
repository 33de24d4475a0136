# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""I/O helpers: resilient downloads, config loading, checkpoint restore, run metadata."""
import hashlib
import os
import subprocess
import time
import urllib.request

import numpy as np
import torch
import yaml


def download(url, dest, sha256=None, retries=5, timeout=60):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest + ".part", "wb") as f:  # ok: MLS411, MLS412
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            break
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    if sha256:
        h = hashlib.sha256(open(dest + ".part", "rb").read()).hexdigest()
        if h != sha256:
            os.remove(dest + ".part")  # ok: MLS308
            raise ValueError(f"checksum mismatch for {url}")
    os.replace(dest + ".part", dest)
    return dest


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_embeddings(path):
    return np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def restore(model, path, device="cpu"):
    sd = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(sd.get("model", sd), strict=False)
    return missing, unexpected


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def log_run_metadata(run, cfg):
    if int(os.environ.get("RANK", "0")) == 0:
        run.log({"meta/commit": git_commit() or "unknown", "meta/host_gpus": torch.cuda.device_count()})  # ok: MLS306
        run.config.update(cfg)
