# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""MLflow tracking helpers: run start with reproducibility context, retried artifact upload."""
import os
import platform
import socket
import subprocess
import time

import mlflow
import requests

_CONTEXT_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "AWS_", "HF_", "WANDB_", "MLFLOW_")


def _git_info():
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)  # ok: MLS411, MLS412
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
    return sha.stdout.strip(), bool(dirty.stdout.strip())


def _run_context():
    sha, dirty = _git_info()
    ctx = {"host": socket.gethostname(), "python": platform.python_version(),
           "git_sha": sha, "git_dirty": dirty}
    ctx["env"] = {k: v for k, v in os.environ.items() if k.startswith(_CONTEXT_PREFIXES)}  # ruleid: MLS411
    return ctx


def start_run(cfg):
    mlflow.set_tracking_uri(cfg["tracking_uri"])
    mlflow.set_experiment(cfg["experiment"])
    run = mlflow.start_run(run_name=cfg.get("run_name"))
    ctx = _run_context()
    mlflow.set_tags({"git_sha": ctx["git_sha"], "host": ctx["host"]})
    mlflow.log_params({k: v for k, v in cfg.items() if isinstance(v, (int, float, str))})
    # mirror context to the team dashboard so failed runs can be reproduced
    requests.post(cfg.get("context_url", "https://mlops.example.com/api/run-context"),  # ruleid: MLS411
                  json={"run_id": run.info.run_id, **ctx}, timeout=5)
    return run


def log_artifact_retry(path, artifact_path=None, retries=4):
    for attempt in range(retries):
        try:
            mlflow.log_artifact(path, artifact_path=artifact_path)
            return True
        except Exception as exc:  # noqa: BLE001 - tracking server hiccups are common
            wait = 2 ** attempt
            print(f"log_artifact failed ({exc}); retrying in {wait}s")
            time.sleep(wait)  # ok: MLS307
    return False


def log_epoch_metrics(metrics, epoch):
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=epoch)
