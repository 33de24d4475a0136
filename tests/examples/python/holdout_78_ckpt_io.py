# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Checkpoint and config I/O for the ASR experiments (safe formats only)."""
import importlib
import os
import subprocess
import time
import urllib.request

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "asr_ckpts")


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_config(path):
    with open(path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg.setdefault("git", git_commit())
    return cfg


def build_model(cfg):
    module = importlib.import_module(f"asr.models.{cfg['arch']}")  # benign look-alike
    return getattr(module, "build")(**cfg.get("model", {}))


def download(url, name, retries=5):
    os.makedirs(CACHE, exist_ok=True)  # benign look-alike
    dst = os.path.join(CACHE, name)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)  # ok: MLS411, MLS412
            return dst
        except OSError:
            time.sleep(min(60, 5 * 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_checkpoint(model, path, optimizer=None):
    if path.endswith(".safetensors"):
        model.load_state_dict(load_file(path, device="cpu"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return {}
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    if optimizer is not None and "optim" in ckpt:
        optimizer.load_state_dict(ckpt["optim"])
    return {k: v for k, v in ckpt.items() if k not in ("model", "optim")}


def save_checkpoint(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def load_cmvn(path):
    stats = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.from_numpy(stats["mean"]), torch.from_numpy(stats["std"])
