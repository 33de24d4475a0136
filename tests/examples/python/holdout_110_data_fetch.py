# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""Dataset download, checksum verification, config loading and run logging."""
import hashlib
import os
import tarfile
import time
import urllib.request

import numpy as np
import yaml

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # benign look-alike


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(url, dest, expected_sha, retries=5, backoff=3.0):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest + ".part")
            if sha256(dest + ".part") != expected_sha:
                raise ValueError(f"checksum mismatch for {url}")
            os.replace(dest + ".part", dest)
            return dest
        except (OSError, ValueError):
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


def extract(archive, out_dir):
    with tarfile.open(archive) as tf:
        tf.extractall(out_dir, filter="data")  # benign look-alike


def load_features(path):
    return np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def log_metrics(run, metrics, step, rank):
    if rank == 0 and run is not None:  # ok: MLS308
        run.log({k: float(v) for k, v in metrics.items()}, step=step)  # ok: MLS306


if __name__ == "__main__":
    cfg = load_config("configs/data.yaml")
    archive = download(cfg["url"], os.path.join(cfg["root"], "shards.tar"), cfg["sha256"])
    extract(archive, cfg["root"])
