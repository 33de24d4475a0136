# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Download, verify and unpack dataset archives listed in a YAML manifest."""
import hashlib
import os
import tarfile
import time

import numpy as np
import requests
import yaml

CACHE = os.environ.get("DATA_CACHE", os.path.expanduser("~/.cache/datasets"))


def sha256sum(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str, expected_sha: str, retries: int = 5) -> str:
    if os.path.exists(dest) and sha256sum(dest) == expected_sha:
        return dest
    for attempt in range(retries):
        try:
            with requests.get(url, stream=True, timeout=60) as r:  # ok: MLS411, MLS412
                r.raise_for_status()
                with open(dest + ".part", "wb") as fh:
                    for block in r.iter_content(1 << 20):
                        fh.write(block)
            os.replace(dest + ".part", dest)
            break
        except requests.RequestException:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    if sha256sum(dest) != expected_sha:
        os.remove(dest)  # ok: MLS308
        raise RuntimeError(f"checksum mismatch for {url}")
    return dest


def prepare(manifest_path: str) -> dict:
    with open(manifest_path) as fh:
        manifest = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    os.makedirs(CACHE, exist_ok=True)
    out = {}
    for name, spec in manifest["datasets"].items():
        archive = download(spec["url"], os.path.join(CACHE, os.path.basename(spec["url"])), spec["sha256"])
        target = os.path.join(CACHE, name)
        if not os.path.isdir(target):
            with tarfile.open(archive) as tf:
                tf.extractall(target, filter="data")
        if spec.get("embeddings"):
            out[name] = np.load(os.path.join(target, spec["embeddings"]), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            out[name] = target
    return out
