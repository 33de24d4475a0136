# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Download, verify and load pretrained speech-encoder assets (config + safetensors) into a local cache."""
import hashlib
import os
import subprocess
import time
from pathlib import Path

import requests
import yaml
from safetensors.torch import load_file

CACHE = Path(os.environ.get("ASSET_CACHE", Path.home() / ".cache" / "speech-assets"))
BASE_URL = "https://assets.example.com/speech-encoder/v3"


def sha256sum(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(name, expected_sha, retries=4, backoff=2.0):
    dest = CACHE / name
    if dest.exists() and sha256sum(dest) == expected_sha:
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    for attempt in range(retries):
        try:
            with requests.get(f"{BASE_URL}/{name}", stream=True, timeout=30) as r:  # ok: MLS411, MLS412
                r.raise_for_status()
                with open(tmp, "wb") as f:
                    for block in r.iter_content(1 << 20):
                        f.write(block)
            if sha256sum(tmp) != expected_sha:
                raise IOError(f"checksum mismatch for {name}")
            os.replace(tmp, dest)
            return dest
        except (requests.RequestException, IOError):
            if attempt == retries - 1:
                raise
            time.sleep(backoff * 2 ** attempt)  # ok: MLS307


def code_version():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)  # ok: MLS411, MLS412
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def load_encoder(manifest):
    cfg_path = download("config.yaml", manifest["config.yaml"])
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    weights = load_file(str(download("encoder.safetensors", manifest["encoder.safetensors"])), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return cfg, weights, code_version()
