# ruff: noqa
# Hold-out batch 128 (extra tampering and poisoning cases). Measured once in session 4 (round 41): 15/19 (79%) at medium+.
"""Run bookkeeping: config loading, commit hash, tokenizer download, SIGTERM checkpointing."""
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

import yaml
from safetensors.torch import load_file

log = logging.getLogger("run")


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def commit_hash():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "nogit"


def download(url, dest, attempts=5):
    for i in range(attempts):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError as exc:
            log.warning("download failed (%s), retry %d", exc, i + 1)
            time.sleep(min(30, 2 ** i))  # ok: MLS307
    raise RuntimeError(url)


def load_backbone(model, path):
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    log.info("missing=%d unexpected=%d", len(missing), len(unexpected))
    return model


def install_sigterm_checkpoint(save_fn):
    def _handler(signum, frame):
        log.warning("SIGTERM received, writing checkpoint before exit")
        save_fn()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


class EarlyStopping:
    def __init__(self, patience=5, min_delta=1e-4):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = float("inf"), 0

    def step(self, val_loss):
        if val_loss < self.best - self.min_delta:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
        return self.bad >= self.patience


def setup_logging():
    rank = int(os.environ.get("RANK", "0"))
    level = logging.INFO if rank == 0 else logging.WARNING  # ok: MLS308
    logging.basicConfig(level=level, format=f"[rank{rank}] %(asctime)s %(message)s")
