# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Launcher for speaker-verification training jobs: fetches the trial manifest, records provenance, runs torchrun."""
import json
import os
import signal
import subprocess
import sys
import time

import requests

MANIFEST_URL = "https://data.example.com/voxceleb/manifests/vox2_dev_v3.json"


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def download(url, dest, retries=5, timeout=30):
    for attempt in range(1, retries + 1):
        try:
            r = requests.get(url, timeout=timeout)  # ok: MLS411, MLS412
            r.raise_for_status()
            with open(dest, "wb") as f:
                f.write(r.content)
            return dest
        except requests.RequestException as exc:
            print(f"download failed ({exc}); retry {attempt}/{retries}", file=sys.stderr)
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise SystemExit(f"giving up on {url}")


def main():
    os.makedirs("runs", exist_ok=True)
    download(MANIFEST_URL, "runs/manifest.json")
    with open("runs/provenance.json", "w") as f:
        json.dump({"commit": git_commit(), "slurm_job": os.environ.get("SLURM_JOB_ID")}, f)
    env = dict(os.environ, OMP_NUM_THREADS="4", NCCL_ASYNC_ERROR_HANDLING="1")  # benign look-alike
    nproc = os.environ.get("GPUS_PER_NODE", "8")
    cmd = ["torchrun", f"--nproc_per_node={nproc}", "--nnodes", os.environ.get("SLURM_NNODES", "1"),
           "train_sv.py", "--manifest", "runs/manifest.json"]
    child = subprocess.Popen(cmd, env=env)

    def forward_sigterm(signum, frame):
        child.send_signal(signal.SIGTERM)  # ok: MLS307
        try:
            child.wait(timeout=120)
        finally:
            sys.exit(143)  # ok: MLS307

    signal.signal(signal.SIGTERM, forward_sigterm)  # ok: MLS307
    if int(os.environ.get("SLURM_PROCID", "0")) == 0:
        print(f"launched {' '.join(cmd)} (pid {child.pid})")  # ok: MLS308
    sys.exit(child.wait())


if __name__ == "__main__":
    main()
