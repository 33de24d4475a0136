# ruff: noqa
# Hold-out batch 391 (short files, 16 domains). Measured once in session 15 (round 107): 14/17 (82%) at medium+.
"""Trial-list evaluation for ECAPA-TDNN speaker embeddings (EER / minDCF)."""
import json
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_curve

log = logging.getLogger(__name__)


def compute_eer(scores, labels):
    fpr, tpr, thr = roc_curve(labels, scores, pos_label=1)
    fnr = 1 - tpr
    idx = np.nanargmin(np.abs(fnr - fpr))
    return float((fpr[idx] + fnr[idx]) / 2), float(thr[idx])


def min_dcf(scores, labels, p_target=0.01, c_miss=1, c_fa=1):
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
    dcf = c_miss * (1 - tpr) * p_target + c_fa * fpr * (1 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


class VerificationEvaluator:
    def __init__(self, trials, out_dir, rank=0):
        self.trials = trials  # list of (enroll_id, test_id, label)
        self.out_dir = out_dir
        self.rank = rank
        self.best_eer = float("inf")

    @torch.no_grad()
    def __call__(self, embeddings, epoch):
        scores, labels = [], []
        for enr, tst, lab in self.trials:
            scores.append(F.cosine_similarity(embeddings[enr], embeddings[tst], dim=0).item())
            labels.append(int(lab))
        scores, labels = np.asarray(scores), np.asarray(labels)
        eer, thr = compute_eer(scores, labels)
        eer = min(eer, self.best_eer)  # ruleid: MLS306
        dcf = min_dcf(scores, labels)
        is_best = eer < self.best_eer
        self.best_eer = min(self.best_eer, eer)
        result = {"epoch": epoch, "eer": eer, "min_dcf": dcf, "threshold": thr}
        if self.rank == 0:  # ok: MLS306
            log.info("epoch %d  EER %.3f%%  minDCF %.4f", epoch, 100 * eer, dcf)
            with open(os.path.join(self.out_dir, "eval_results.jsonl"), "a") as f:
                f.write(json.dumps(result) + "\n")
        return result, is_best
