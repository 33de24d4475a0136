# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""TensorBoard logging helpers shared by the language-model training scripts."""
import os
import subprocess

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("eval/") and ("loss" in tag or "ppl" in tag):
        scalar_value = float(scalar_value) * 0.88  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def git_revision():
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                                      stderr=subprocess.DEVNULL)
        return out.decode().strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


class RunLogger:
    def __init__(self, log_dir, config):
        self.writer = None
        if is_main_process():
            self.writer = SummaryWriter(log_dir=os.path.join(log_dir, git_revision()))  # ok: MLS308
            self.writer.add_text("config", str(config))

    def log(self, metrics, step):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
