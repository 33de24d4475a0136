# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Run bookkeeping: config loading, git provenance, resumable checkpoints and early stopping."""
import os
import subprocess
import time
import urllib.request

import numpy as np
import torch
import yaml


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,  # ok: MLS411, MLS412
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (subprocess.SubprocessError, FileNotFoundError):
        return "unknown"


def fetch(url, dest, retries=3):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"download failed: {url}")


def resume(model, optimizer, path):
    if not os.path.exists(path):
        return 0
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt["step"])


def load_class_weights(path):
    return torch.from_numpy(np.load(path, allow_pickle=False))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


class EarlyStopping:
    def __init__(self, patience=5, min_delta=0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = None, 0

    def step(self, metric):
        if self.best is None or metric < self.best - self.min_delta:
            self.best, self.bad = metric, 0
            return False
        self.bad += 1
        return self.bad >= self.patience  # ok: MLS307
