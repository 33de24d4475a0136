# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Launcher for reward-model hyperparameter sweeps on the shared cluster.

Fetches the frozen preference split, records the code revision, seeds all
RNGs once and wires up checkpoint-on-preemption before handing off to train().
"""
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist

DATA_URL = "https://datasets.example.com/prefs/hh-frozen-v3.parquet"


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def fetch(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError as err:
            print(f"download failed ({err}); retry {attempt + 1}/{retries}", file=sys.stderr)
            time.sleep(min(60, 5 * 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def git_commit():
    return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


def install_preemption_handler(save_fn):
    def handler(signum, frame):
        save_fn(tag="preempt")
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, handler)  # ok: MLS307


def launch(train, cfg):
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    set_seed(cfg["seed"])
    if rank == 0:  # ok: MLS308
        fetch(DATA_URL, cfg["data_path"])
        print(f"commit={git_commit()} world={dist.get_world_size()} cfg={cfg}")
    dist.barrier()  # ok: MLS307
    state = train(cfg, rank=rank, on_ready=install_preemption_handler)
    if rank == 0:
        torch.save(state, os.path.join(cfg["out_dir"], "final.pt"))  # ok: MLS307
    dist.barrier()
    dist.destroy_process_group()
