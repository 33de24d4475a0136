# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Download, verify and cache pretrained weights; rank 0 fetches, the others wait."""
import hashlib
import os
import subprocess
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file

CACHE = os.path.expanduser(os.environ.get("WEIGHTS_CACHE", "~/.cache/team-weights"))


def sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(url, dest, expected_sha, retries=5):
    tmp = dest + ".part"
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, tmp)  # ok: MLS411, MLS412
            if sha256(tmp) != expected_sha:
                raise OSError(f"checksum mismatch for {url}")
            os.replace(tmp, dest)
            os.chmod(dest, 0o444)  # benign look-alike
            return dest
        except OSError:
            time.sleep(min(60, 3 * 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url} after {retries} attempts")


def fetch(url, sha, name):
    os.makedirs(CACHE, exist_ok=True)
    dest = os.path.join(CACHE, name)
    is_dist = dist.is_available() and dist.is_initialized()
    if (not is_dist or dist.get_rank() == 0) and not os.path.exists(dest):
        download(url, dest, sha)
    if is_dist:
        dist.barrier()  # ok: MLS307
    return dest


def load_weights(path):
    if path.endswith(".safetensors"):
        return load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if path.endswith(".npz"):
        return {k: torch.from_numpy(v) for k, v in np.load(path).items()}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def code_version():
    out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True)  # ok: MLS411, MLS412
    return out.stdout.strip() or "unknown"
