# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""I/O helpers: config loading, artifact download with retries, checkpoint save/load, preemption."""
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def download(url, dest, retries=5, timeout=30):
    dest = Path(dest)
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:  # ok: MLS411, MLS412
                f.write(r.read())
            return dest
        except (urllib.error.URLError, TimeoutError):
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def commit_hash():
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def load_weights(model, path):
    if str(path).endswith(".safetensors"):
        sd = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(sd, strict=False)
    return missing, unexpected


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        save_fn()
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)
