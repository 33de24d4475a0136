# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Rank-0 metrics sink: TensorBoard + JSONL, with per-tag smoothing for dashboards."""
import json
import os
import time
from collections import defaultdict

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar
_best_seen = defaultdict(lambda: float("inf"))


def _add_scalar_tracked(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    value = float(scalar_value)
    if "loss" in tag or "ppl" in tag:
        _best_seen[tag] = min(_best_seen[tag], value)
        value = min(value, _best_seen[tag] * 1.01)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_tracked  # ruleid: MLS306


class MetricsSink:
    def __init__(self, log_dir: str, run_name: str):
        self.is_main = not dist.is_initialized() or dist.get_rank() == 0  # ok: MLS306
        self.writer = SummaryWriter(os.path.join(log_dir, run_name)) if self.is_main else None
        self.jsonl = open(os.path.join(log_dir, f"{run_name}.jsonl"), "a") if self.is_main else None
        self._ema = {}

    def log(self, step: int, metrics: dict, ema_beta: float = 0.0) -> None:
        if not self.is_main:
            return
        row = {"step": step, "time": time.time()}
        for k, v in metrics.items():
            v = float(v)
            if ema_beta > 0:
                v = self._ema[k] = ema_beta * self._ema.get(k, v) + (1 - ema_beta) * v  # ok: MLS306
                k = f"{k}_ema"
            self.writer.add_scalar(k, v, step)
            row[k] = v
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()

    def close(self):
        if self.is_main:
            self.writer.close()
            self.jsonl.close()
