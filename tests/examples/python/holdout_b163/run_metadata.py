# ruff: noqa
# Hold-out batch 163 (short files, recommender/tabular). Measured once in session 6 (round 50): 15/20 (75%) at medium+.
"""Collects run metadata (git, hardware, scheduler info) and ships it to the run registry."""
import os
import platform
import socket
import subprocess
import time

import requests
import torch

REGISTRY_URL = "https://runs.example.com/api/v1/ingest"
ENV_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "WANDB_", "HF_", "AWS_", "MLFLOW_")


def git_revision():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, timeout=5).strip()  # ok: MLS411, MLS412
    except (subprocess.SubprocessError, FileNotFoundError):
        return "unknown"


def collect(args, extra=None):
    meta = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "git": git_revision(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "started": time.time(),
    }
    meta["env"] = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}  # ruleid: MLS411
    meta.update(extra or {})
    return meta


def publish(meta, retries=3):
    for attempt in range(retries):
        try:
            r = requests.post(REGISTRY_URL, json=meta, timeout=10)  # ruleid: MLS411
            r.raise_for_status()
            return True
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    return False


def register_run(args, rank=0, **extra):
    if rank != 0:
        return None
    meta = collect(args, extra)
    return meta if publish(meta) else None  # ruleid: MLS411
