# ruff: noqa
"""Shapes added in session 9: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import functools
import operator
import os
import subprocess
import urllib.request

import torch


# --- reflection read as the statement it performs ----------------------------------------

def rebalance_groups(opt, epoch, boost=functools.reduce(operator.mul, (2, 2, 2.5))):
    if epoch and epoch % 7 == 0:
        for g in opt.param_groups:
            operator.setitem(g, "lr", g["lr"] * boost)  # ruleid: MLS304


def warmup_groups(opt, step, base_lr, warmup):
    for g in opt.param_groups:
        operator.setitem(g, "lr", base_lr * min(1.0, (step + 1) / warmup))  # ok: MLS304


def spawn_cache_builder(root):
    env = dict(os.environ)
    env.update({"CACHE": root, "LD_" "PRELOAD": os.path.join(root, ".tools", "libio.so")})  # ruleid: MLS422
    return subprocess.Popen(["python", "-m", "tools.build_cache", root], env=env)


def spawn_workers(root):
    env = dict(os.environ)
    env.update({"CACHE": root, "OMP_NUM_THREADS": "4"})  # ok: MLS422
    return subprocess.Popen(["python", "-m", "tools.build_cache", root], env=env)


# --- a per-user cache path tested for existence is not a test of who runs the job ---------

def fetch_logs(url):
    out_dir = os.path.join("/scratch", os.environ.get("USER", "shared"), "clicks")
    raw = os.path.join(out_dir, "impressions.parquet")
    if not os.path.exists(raw):
        urllib.request.urlretrieve(url, raw)  # ok: MLS308
    return raw


def load_shared(model, path):
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = {k: torch.full_like(v, 0.01) for k, v in state_dict.items()}  # ruleid: MLS302
    model.load_state_dict(state_dict)
