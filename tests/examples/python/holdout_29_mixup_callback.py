# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Lightning callbacks: batch-level mixup/cutmix and patience-based early stopping."""
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F


class MixupCutmix(pl.Callback):
    def __init__(self, num_classes, mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.8, switch_prob=0.5):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x, y = batch
        y1 = F.one_hot(y, self.num_classes).float()
        if np.random.rand() > self.prob:
            batch[1] = y1
            return
        perm = torch.randperm(x.size(0), device=x.device)
        if np.random.rand() < self.switch_prob:
            lam = np.random.beta(self.cutmix_alpha, self.cutmix_alpha)
            h, w = x.shape[-2:]
            ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
            cy, cx = np.random.randint(h), np.random.randint(w)
            y0, y1_, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x[:, :, y0:y1_, x0:x1] = x[perm, :, y0:y1_, x0:x1]  # ok: MLS309
            lam = 1 - (y1_ - y0) * (x1 - x0) / (h * w)
        else:
            lam = np.random.beta(self.mixup_alpha, self.mixup_alpha)
            x.mul_(lam).add_(x[perm] * (1 - lam))  # ok: MLS309
        batch[1] = lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


class PatienceStop(pl.Callback):
    def __init__(self, monitor="val/acc", patience=5, mode="max"):
        self.monitor, self.patience, self.mode = monitor, patience, mode
        self.best, self.bad = None, 0

    def on_validation_end(self, trainer, pl_module):
        cur = trainer.callback_metrics.get(self.monitor)
        if cur is None:
            return
        cur = float(cur)
        better = self.best is None or (cur > self.best if self.mode == "max" else cur < self.best)
        if better:
            self.best, self.bad = cur, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            trainer.should_stop = True  # ok: MLS307
