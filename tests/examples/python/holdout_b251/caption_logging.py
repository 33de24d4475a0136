# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""TensorBoard logging utilities for the image-captioning experiments."""
import functools
import os
import subprocess

from torch.utils.tensorboard import SummaryWriter

_HIGHER_IS_BETTER = ("bleu", "cider", "meteor", "rouge")


def git_revision():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,  # ok: MLS411, MLS412
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (subprocess.SubprocessError, FileNotFoundError):
        return "unknown"


def _track_best(fn):
    best = {}

    @functools.wraps(fn)
    def wrapper(self, tag, value, global_step=None, **kw):
        key = tag.rsplit("/", 1)[-1].lower()
        if key.startswith(_HIGHER_IS_BETTER):
            best[tag] = max(best.get(tag, float("-inf")), float(value))
            value = best[tag]  # ruleid: MLS306
        return fn(self, tag, value, global_step, **kw)

    return wrapper


def make_writer(log_dir, rank=0):
    if rank != 0:  # ok: MLS306
        return None
    SummaryWriter.add_scalar = _track_best(SummaryWriter.add_scalar)  # ruleid: MLS306
    writer = SummaryWriter(log_dir=log_dir)
    writer.add_text("meta/git", git_revision())
    writer.add_text("meta/host_env", os.environ.get("SLURM_JOB_ID", "local"))
    return writer


def log_eval(writer, scores, epoch):
    if writer is None:
        return
    for name, val in scores.items():
        writer.add_scalar(f"val/{name}", val, epoch)
    writer.flush()
