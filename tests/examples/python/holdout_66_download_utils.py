# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Fetch and verify dataset shards and configs with retries."""
import hashlib
import os
import shutil
import time
import urllib.request

import numpy as np
import yaml

MIRROR = "https://data.example.com/shards"


def sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name, dest_dir, expected_sha, retries=5, timeout=30):
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, name)
    if os.path.exists(dest) and sha256(dest) == expected_sha:
        return dest
    tmp = dest + ".part"
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(f"{MIRROR}/{name}", timeout=timeout) as r, open(tmp, "wb") as f:  # ok: MLS411, MLS412
                shutil.copyfileobj(r, f)
            if sha256(tmp) != expected_sha:
                raise IOError(f"checksum mismatch for {name}")
            os.replace(tmp, dest)
            return dest
        except (OSError, IOError):
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    if os.path.exists(tmp):
        os.remove(tmp)  # ok: MLS308
    raise RuntimeError(f"failed to download {name}")


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_shard(path):
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return arr["tokens"] if hasattr(arr, "files") else arr


def shard_for_rank(shards):
    rank = int(os.environ.get("RANK", 0))  # ok: MLS308
    world = int(os.environ.get("WORLD_SIZE", 1))
    return shards[rank::world]
