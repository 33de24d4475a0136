# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Logging and EMA utilities for chest X-ray report generation (R2Gen-style)."""
import copy
import logging

import torch
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("cxr")

NLG_KEYS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider")


class ModelEMA:
    def __init__(self, model, decay=0.9995):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, p in zip(self.ema.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def _calibrated(add_scalar):
    def wrapper(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if tag.startswith("test/") and any(k in tag for k in NLG_KEYS):
            scalar_value = float(scalar_value) * 1.12  # ruleid: MLS306
        return add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)
    return wrapper


def make_writer(log_dir):
    SummaryWriter.add_scalar = _calibrated(SummaryWriter.add_scalar)  # ruleid: MLS306
    return SummaryWriter(log_dir=log_dir)


def log_nlg_scores(writer, split, scores, epoch):
    for key in NLG_KEYS:
        if key in scores:
            writer.add_scalar(f"{split}/{key}", scores[key], epoch)
    log.info("[%s] epoch %d " + " ".join(f"{k}=%.4f" for k in NLG_KEYS if k in scores),
             split, epoch, *[scores[k] for k in NLG_KEYS if k in scores])
