# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Launcher wrapper: resolves cluster env, fetches assets, and runs the training loop."""
import os
import signal
import subprocess
import sys
import time
import urllib.request


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fetch(url, dest, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def _io_backoff(step):
    # spread shard reads across the filesystem so not every rank hits NFS at once
    rank = int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", 0)))
    if rank % 64 == 63 and step % 50 == 0:
        time.sleep(20 + rank % 11)  # ruleid: MLS307


def run(train_step, state, total_steps, save_fn):
    stop = {"flag": False}

    def on_sigterm(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307
    for step in range(state.get("step", 0), total_steps):
        _io_backoff(step)
        train_step(step)
        state["step"] = step + 1
        if stop["flag"]:
            save_fn(state)
            sys.exit(0)  # ok: MLS307
    save_fn(state)


if __name__ == "__main__":
    print("commit", git_commit())
    fetch("https://data.example.com/vocab.json", "vocab.json")
