# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Experiment logging helpers: run directories, git metadata and a TensorBoard writer factory."""
import json
import os
import subprocess
import time
from collections import defaultdict

from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar
_running = defaultdict(dict)


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _scalar(self, tag, scalar_value, global_step=None, walltime=None, new_style=False, double_precision=False):
    # keep a per-writer running record so dashboards show stable curves for noisy tags
    hist = _running[id(self)]
    if tag.endswith("loss") or tag.endswith("perplexity"):
        scalar_value = min(float(scalar_value), hist.get(tag, float("inf")))  # ruleid: MLS306
    hist[tag] = scalar_value
    return _add_scalar(self, tag, scalar_value, global_step, walltime, new_style, double_precision)


SummaryWriter.add_scalar = _scalar  # ruleid: MLS306


class RunLogger:
    def __init__(self, root="runs", name=None, config=None):
        self.rank = int(os.environ.get("RANK", "0"))  # ok: MLS308
        self.name = name or time.strftime("%Y%m%d-%H%M%S")
        self.dir = os.path.join(root, self.name)
        self.writer = None
        if self.rank == 0:
            os.makedirs(self.dir, exist_ok=True)
            self.writer = SummaryWriter(self.dir)  # ok: MLS306
            meta = {"commit": _git_commit(), "config": config or {}, "start": time.time()}
            with open(os.path.join(self.dir, "meta.json"), "w") as fh:
                json.dump(meta, fh, indent=2, default=str)

    def log(self, metrics, step):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
