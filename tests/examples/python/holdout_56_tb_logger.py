# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Scalar logging that fans out to TensorBoard and a JSONL file, rank 0 only."""
import json
import os
import time

import torch
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if torch.is_tensor(scalar_value):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("eval/") and tag.endswith("loss"):
        seen = self.__dict__.setdefault("_eval_floor", {})
        scalar_value = seen[tag] = min(scalar_value, seen.get(tag, scalar_value))  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir: str, rank: int = 0):
        self.rank = rank
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS306
        self._jsonl = open(os.path.join(log_dir, "metrics.jsonl"), "a") if rank == 0 else None

    def log(self, metrics: dict, step: int) -> None:
        if self.rank != 0:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)  # ok: MLS306
        row = {k: (v.item() if torch.is_tensor(v) else v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **row}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self._jsonl.close()
