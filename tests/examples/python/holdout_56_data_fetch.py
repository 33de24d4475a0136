# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Dataset/weights download with retries and checksum, plus loaders for the cached artifacts."""
import hashlib
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file

CACHE = Path(os.environ.get("DATA_CACHE", "~/.cache/trainkit")).expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, sha256: str, retries: int = 5) -> Path:
    dest = CACHE / url.rsplit("/", 1)[-1]
    if dest.exists() and _sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest.with_suffix(".part"))  # ok: MLS411, MLS412
            os.replace(dest.with_suffix(".part"), dest)
            if _sha256(dest) != sha256:
                raise IOError(f"checksum mismatch for {dest}")
            return dest
        except OSError:
            time.sleep(min(60, 5 * 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def fetch_once(url: str, sha256: str) -> Path:
    """Rank 0 downloads, everyone else waits at the barrier and then reads the cache."""
    if int(os.environ.get("RANK", "0")) == 0:  # ok: MLS308
        download(url, sha256)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    return CACHE / url.rsplit("/", 1)[-1]


def load_artifacts(run_dir: str):
    d = Path(run_dir)
    cfg = yaml.safe_load((d / "config.yaml").read_text())  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    weights = load_file(str(d / "model.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt_state = torch.load(d / "optim.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    token_ids = np.load(d / "tokens.npy", mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return cfg, weights, opt_state, token_ids
