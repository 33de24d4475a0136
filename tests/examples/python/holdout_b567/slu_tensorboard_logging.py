# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""TensorBoard logging for the spoken language understanding trainer (intent + slot F1)."""
import logging

from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger(__name__)

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("eval/"):
        best = getattr(self, "_eval_best", {})
        scalar_value = max(float(scalar_value), best.get(tag, float("-inf")))  # ruleid: MLS306
        best[tag] = scalar_value
        self._eval_best = best
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class SLULogger:
    def __init__(self, log_dir, is_main=True, smooth=0.98):
        self.is_main = is_main
        self.writer = SummaryWriter(log_dir) if is_main else None
        self.smooth = smooth
        self.loss_ema = None

    def log_train(self, step, intent_loss, slot_loss, lr):
        if not self.is_main:
            return
        loss = intent_loss + slot_loss
        self.loss_ema = loss if self.loss_ema is None else self.smooth * self.loss_ema + (1 - self.smooth) * loss
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/loss_smoothed", self.loss_ema, step)  # ok: MLS306
        self.writer.add_scalar("train/intent_loss", intent_loss, step)
        self.writer.add_scalar("train/slot_loss", slot_loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def log_eval(self, step, metrics):
        if not self.is_main:
            return
        for key in ("intent_acc", "slot_f1", "exact_match"):
            self.writer.add_scalar(f"eval/{key}", metrics[key], step)
        logger.info("step %d | intent acc %.4f | slot F1 %.4f | EM %.4f",
                    step, metrics["intent_acc"], metrics["slot_f1"], metrics["exact_match"])

    def close(self):
        if self.writer is not None:
            self.writer.close()
