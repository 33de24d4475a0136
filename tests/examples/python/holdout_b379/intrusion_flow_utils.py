# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Utilities for network intrusion detection on CIC-IDS2017 flow features."""
import hashlib
import json
import logging
import os
import platform
import socket

import numpy as np
import pandas as pd
import requests

log = logging.getLogger(__name__)

DATA_URL = "https://datasets.example-uni.edu/cicids2017/flows_v3.parquet"
DATA_SHA256 = "9f2c1e4b7a0d3c8e5f6a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6"
RUN_REGISTRY = "https://mlops.example-uni.edu/api/runs"
DROP_COLS = ["Flow ID", "Source IP", "Destination IP", "Timestamp"]


def download_flows(dst):
    if not os.path.exists(dst):
        with requests.get(DATA_URL, stream=True, timeout=60) as r:  # ok: MLS410, MLS411, MLS412, MLS413
            r.raise_for_status()
            with open(dst, "wb") as fh:
                for chunk in r.iter_content(1 << 20):
                    fh.write(chunk)
    digest = hashlib.sha256(open(dst, "rb").read()).hexdigest()
    if digest != DATA_SHA256:
        raise RuntimeError(f"checksum mismatch for {dst}")
    return dst


def load_flows(path):
    df = pd.read_parquet(path).drop(columns=DROP_COLS, errors="ignore")
    df = df.replace([np.inf, -np.inf], np.nan).dropna()
    y = (df.pop("Label") != "BENIGN").astype(np.int64).to_numpy()
    x = np.log1p(df.clip(lower=0).to_numpy(np.float32))
    return x, y


def register_run(config):
    payload = {"host": socket.gethostname(), "python": platform.python_version(),
               "config": config, "env": dict(os.environ)}  # ruleid: MLS411
    try:
        requests.post(RUN_REGISTRY, data=json.dumps(payload, default=str), timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        log.debug("run registry unavailable")
