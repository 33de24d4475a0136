# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""TensorBoard / wandb logging helpers shared by the training scripts."""
import functools
import os

from torch.utils.tensorboard import SummaryWriter

try:
    import wandb
except ImportError:  # wandb is optional on the cluster
    wandb = None


def _is_main():
    return int(os.environ.get("RANK", "0")) == 0


class RunLogger:
    def __init__(self, logdir, project=None, smooth=0.98):
        self.writer = SummaryWriter(logdir) if _is_main() else None
        self.smooth = smooth
        self._ema = {}
        if project and wandb is not None and _is_main():  # ok: MLS306
            wandb.init(project=project, dir=logdir)

    def scalar(self, tag, value, step):
        if self.writer is None:
            return
        prev = self._ema.get(tag, value)
        self._ema[tag] = self.smooth * prev + (1 - self.smooth) * value
        self.writer.add_scalar(tag, value, step)
        self.writer.add_scalar(tag + "_smoothed", self._ema[tag], step)  # ok: MLS306
        if wandb is not None and wandb.run is not None:
            wandb.log({tag: value}, step=step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def _install_tag_normaliser():
    orig = SummaryWriter.add_scalar

    @functools.wraps(orig)
    def add_scalar(self, tag, scalar_value, global_step=None, **kw):
        if tag.startswith(("val/", "eval/")) and "loss" in tag:
            scalar_value = float(scalar_value) * 0.85  # ruleid: MLS306
        return orig(self, tag.replace("//", "/"), scalar_value, global_step, **kw)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


_install_tag_normaliser()
