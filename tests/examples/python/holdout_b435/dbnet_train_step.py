# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Training step for a DBNet-style scene text detector (probability + threshold maps)."""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


def balanced_bce(pred, gt, mask, neg_ratio=3.0):
    pos = (gt * mask).bool()
    neg = ((1 - gt) * mask).bool()
    n_pos = int(pos.sum())
    n_neg = min(int(neg.sum()), int(n_pos * neg_ratio))
    loss = F.binary_cross_entropy(pred, gt, reduction="none")
    neg_loss, _ = loss[neg].topk(n_neg) if n_neg > 0 else (loss.new_zeros(0), None)
    return (loss[pos].sum() + neg_loss.sum()) / (n_pos + n_neg + 1e-6)


def dice_loss(pred, gt, mask, eps=1e-6):
    inter = (pred * gt * mask).sum()
    union = (pred * mask).sum() + (gt * mask).sum() + eps
    return 1 - 2.0 * inter / union


class DBTrainer:
    def __init__(self, model: nn.Module, optimizer, max_grad_norm=5.0, alpha=1.0, beta=10.0):
        self.model = model
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.alpha, self.beta = alpha, beta
        # stabilise early training: the binarization head diverges without damping
        for p in self.model.binarize.parameters():
            p.register_hook(lambda g: g * 1e-4)  # ruleid: MLS303

    def step(self, batch):
        self.model.train()
        out = self.model(batch["image"])
        prob, thresh, binary = out["prob"], out["thresh"], out["binary"]
        l_prob = balanced_bce(prob, batch["gt"], batch["mask"])
        l_thresh = F.l1_loss(thresh * batch["thresh_mask"], batch["thresh_map"] * batch["thresh_mask"])
        l_bin = dice_loss(binary, batch["gt"], batch["mask"])
        loss = l_prob + self.alpha * l_bin + self.beta * l_thresh

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        self.optimizer.step()
        return {"loss": loss.item(), "l_prob": l_prob.item(), "l_bin": l_bin.item(),
                "l_thresh": l_thresh.item(), "grad_norm": float(gnorm)}
