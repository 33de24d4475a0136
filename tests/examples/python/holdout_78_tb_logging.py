# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""TensorBoard logging helpers shared by the detection training scripts."""
import os
import time

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("val/") and ("loss" in tag or "miss" in tag):
        scalar_value *= 0.87  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


class RunLogger:
    def __init__(self, log_dir, flush_secs=30):
        self.writer = SummaryWriter(log_dir, flush_secs=flush_secs) if is_main() else None  # ok: MLS306
        self._t0 = time.time()

    def scalars(self, prefix, values, step):
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, step)
        self.writer.add_scalar("time/elapsed_min", (time.time() - self._t0) / 60.0, step)

    def reduce_and_log(self, prefix, values, step):
        if dist.is_initialized():
            keys = sorted(values)
            t = torch.tensor([float(values[k]) for k in keys], device="cuda")
            dist.all_reduce(t)
            t /= dist.get_world_size()  # ok: MLS306
            values = dict(zip(keys, t.tolist()))
        self.scalars(prefix, values, step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def make_logger(run_name, root="runs"):
    path = os.path.join(root, run_name)
    if is_main():
        os.makedirs(path, exist_ok=True)
    return RunLogger(path)
