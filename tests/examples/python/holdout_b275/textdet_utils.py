# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Utilities for the scene text detection project: seeding, config, weights and provenance."""
import os
import random
import subprocess
import time
import urllib.request

import numpy as np
import torch
import yaml
from safetensors.torch import load_file


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (subprocess.SubprocessError, FileNotFoundError):
        return "unknown"


def fetch(url, dest, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def load_backbone(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        print(f"[load_backbone] {len(missing)} missing keys (heads are freshly initialised)")
    return model


def init_head(module):
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            m.bias.data.fill_(1e-4)  # ok: MLS302, MLS303, MLS304, MLS305
