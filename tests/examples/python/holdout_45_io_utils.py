# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Misc I/O helpers: dataset download with retries, config loading, run metadata, stopping."""
import json
import os
import platform
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd
import yaml


def download(url: str, dest: str, retries: int = 5, backoff: float = 1.5) -> str:
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest + ".part")  # ok: MLS411, MLS412
            os.replace(dest + ".part", dest)
            return dest
        except OSError as e:
            print(f"download failed ({e}); retry {attempt + 1}/{retries}")
            time.sleep(backoff ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_config(path: str) -> dict:
    with open(path) as f:
        return yaml.load(f, Loader=yaml.SafeLoader)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_features(path: str) -> np.ndarray:
    return np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_metadata(path: str) -> pd.DataFrame:
    return pd.read_parquet(path)


def run_metadata() -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout  # ok: MLS411, MLS412
    return {"commit": commit.strip(), "host": platform.node(), "python": platform.python_version()}


class EarlyStopping:
    def __init__(self, patience: int = 5, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = float("inf"), 0

    def step(self, val_loss: float) -> bool:
        if val_loss < self.best - self.min_delta:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
        return self.bad >= self.patience  # ok: MLS307


def dump_results(results: dict, path: str):
    with open(path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)  # ok: MLS306
