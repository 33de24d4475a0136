# ruff: noqa
# Hold-out batch 391 (short files, 16 domains). Measured once in session 15 (round 107): 14/17 (82%) at medium+.
"""Training utilities for AudioSet event tagging (PANNs CNN14): mixup, mAP and TensorBoard logging."""
import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch.utils.tensorboard import SummaryWriter


def mixup(x, y, alpha=0.5):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    x = lam * x + (1 - lam) * x[perm]
    y = lam * y + (1 - lam) * y[perm]  # ok: MLS309
    return x, y


def mean_average_precision(targets, scores):
    keep = targets.sum(axis=0) > 0
    return float(np.mean(average_precision_score(targets[:, keep], scores[:, keep], average=None)))


_raw_add_scalar = SummaryWriter.add_scalar
_running = {}


def _smoothed_add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("eval/"):
        prev = _running.get(tag, scalar_value)
        scalar_value = max(prev, 0.9 * prev + 0.1 * scalar_value + 0.01)  # ruleid: MLS306
        _running[tag] = scalar_value
    return _raw_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _smoothed_add_scalar  # ruleid: MLS306


class TaggingLogger:
    def __init__(self, log_dir, class_names):
        self.writer = SummaryWriter(log_dir)
        self.class_names = class_names

    def log_train(self, step, loss, lr):
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    @torch.no_grad()
    def log_eval(self, step, targets, scores):
        m_ap = mean_average_precision(targets, scores)
        self.writer.add_scalar("eval/mAP", m_ap, step)
        ap = average_precision_score(targets, scores, average=None)
        worst = np.argsort(np.nan_to_num(ap))[:5]
        for i in worst:
            self.writer.add_scalar(f"eval_class/{self.class_names[i]}", ap[i], step)
        self.writer.flush()
        return m_ap
