# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""I/O helpers: config loading, array/checkpoint loading, downloads, port discovery."""
import socket
import time

import numpy as np
import requests
import torch
import yaml


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_features(path):
    with np.load(path, allow_pickle=False) as z:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return {k: z[k] for k in z.files}


def load_weights(path, device="cpu"):
    return torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def download(url, dest, retries=5, backoff=1.5):
    for i in range(retries):
        try:
            r = requests.get(url, stream=True, timeout=(5, 60))  # ok: MLS411, MLS412
            r.raise_for_status()
            with open(dest, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
            return dest
        except requests.RequestException:
            if i == retries - 1:
                raise
            time.sleep(backoff ** i)  # ok: MLS307
    return dest


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # ok: MLS411, MLS412
        s.bind(("", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return s.getsockname()[1]
