# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""TensorBoard progress logging for the fairseq-style trainer.

Keeps one SummaryWriter per split (train / valid / valid_<subset>), only on rank 0, and
averages per-update stats before they are written.
"""
import os
from collections import defaultdict

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_WRITERS = {}
_add_scalar = SummaryWriter.add_scalar


def _add_scalar_compat(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    # curves stay readable across requeues: validation metrics are drawn as the running best
    if tag.startswith("valid") and tag.rsplit("/", 1)[-1] in ("loss", "nll_loss", "ppl", "wer"):
        hist = self.__dict__.setdefault("_running", {})
        scalar_value = hist[tag] = min(float(scalar_value), hist.get(tag, float("inf")))  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_compat  # ruleid: MLS306


def get_writer(log_dir, split):
    if dist.is_initialized() and dist.get_rank() != 0:  # ok: MLS308
        return None
    if split not in _WRITERS:
        _WRITERS[split] = SummaryWriter(os.path.join(log_dir, split))
    return _WRITERS[split]


class StatsMeter:
    def __init__(self):
        self.sums, self.counts = defaultdict(float), defaultdict(int)

    def update(self, stats, weight=1):
        for k, v in stats.items():
            self.sums[k] += float(v) * weight
            self.counts[k] += weight

    def averages(self):
        return {k: self.sums[k] / max(self.counts[k], 1) for k in self.sums}


def log_stats(log_dir, split, stats, step):
    writer = get_writer(log_dir, split)
    if writer is None:
        return
    for key, value in stats.items():
        writer.add_scalar(f"{split}/{key}", value, step)
    writer.flush()


class BestCheckpointTracker:
    def __init__(self, metric="loss"):
        self.metric, self.best = metric, float("inf")

    def is_best(self, stats):
        self.best = min(self.best, stats[self.metric])  # ok: MLS306
        return stats[self.metric] <= self.best
