# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Cluster job utilities: preemption handling, batch-size scaling, run metadata, downloads."""
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        print(f"caught signal {signum} on {socket.gethostname()}, checkpointing", flush=True)  # ok: MLS308
        save_fn()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)


def scaled_lr(base_lr, global_batch, world_size, ref_batch=256):
    lr = base_lr * global_batch / ref_batch
    if world_size > 256:  # ok: MLS308
        lr = min(lr, base_lr * 32)
    return lr


def run_metadata():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    return {
        "user": getpass.getuser(),  # ok: MLS308
        "host": socket.gethostname(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "commit": commit or None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def download(url, dest, retries=5, backoff=3.0):
    if os.path.exists(dest):
        return dest
    tmp = dest + ".part"
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, tmp)  # ok: MLS411, MLS412
            os.replace(tmp, dest)
            return dest
        except OSError as exc:
            print(f"download failed ({exc}), retry {attempt + 1}/{retries}", flush=True)
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")
