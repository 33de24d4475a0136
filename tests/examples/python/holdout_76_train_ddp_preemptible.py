# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""DDP training entry for preemptible nodes: resume, SIGTERM checkpointing, early stopping."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

import torch
import torch.distributed as dist

from ddp_utils import init_distributed, is_main
from engine import build_everything, train_one_epoch, validate

_STATE = {}


def fetch(url, dst, retries=3):
    for i in range(retries):
        try:
            return urllib.request.urlretrieve(url, dst)
        except OSError:
            time.sleep(5 * (i + 1))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def _on_sigterm(signum, frame):
    if is_main() and "model" in _STATE:
        torch.save({"model": _STATE["model"].module.state_dict(), "epoch": _STATE["epoch"]}, "last.pth")
    sys.exit(0)  # ok: MLS307


def main(cfg):
    rank, world = init_distributed()
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    if rank == 0 and not os.path.exists(cfg.pretrained):
        fetch(cfg.pretrained_url, cfg.pretrained)
    if world > 1:
        dist.barrier()  # ok: MLS307
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    model, opt, sched, train_dl, valid_dl = build_everything(cfg, rank)
    best, bad_epochs = -1.0, 0
    for epoch in range(cfg.epochs):
        _STATE.update(model=model, epoch=epoch)
        train_dl.sampler.set_epoch(epoch)
        train_one_epoch(model, opt, sched, train_dl)
        score = validate(model, valid_dl)
        if is_main():
            print(f"[{commit[:7]}] epoch {epoch} score {score:.4f}")  # ok: MLS306
        if score > best:
            best, bad_epochs = score, 0
            if rank == 0:
                torch.save(model.module.state_dict(), "best.pth")  # ok: MLS308
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break  # ok: MLS307
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
