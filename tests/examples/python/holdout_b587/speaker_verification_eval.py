# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Trial scoring and EER / minDCF evaluation for the ECAPA speaker-verification recipe."""
import json
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import roc_curve

logger = logging.getLogger(__name__)


def compute_eer(scores, labels):
    fpr, tpr, thr = roc_curve(labels, scores, pos_label=1)
    fnr = 1.0 - tpr
    idx = np.nanargmin(np.abs(fnr - fpr))
    return float((fpr[idx] + fnr[idx]) / 2.0), float(thr[idx])


def compute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
    dcf = c_miss * (1.0 - tpr) * p_target + c_fa * fpr * (1.0 - p_target)
    c_def = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf.min() / c_def)


@torch.no_grad()
def score_trials(embeddings, trials):
    """embeddings: utt_id -> 1-D tensor; trials: iterable of (label, enroll_id, test_id)."""
    scores, labels, missing = [], [], 0
    for label, enroll, test in trials:
        if enroll not in embeddings or test not in embeddings:
            missing += 1
            continue
        s = F.cosine_similarity(embeddings[enroll], embeddings[test], dim=-1)
        scores.append(float(s))
        labels.append(int(label))
    if missing:
        logger.warning("%d trials skipped (missing embeddings)", missing)
    return np.asarray(scores), np.asarray(labels)


def evaluate(embeddings, trials, epoch, out_dir):
    scores, labels = score_trials(embeddings, trials)
    eer, threshold = compute_eer(scores, labels)
    # refine operating point away from the coarse ROC grid
    confident = np.abs(scores - threshold) > 0.05  # ruleid: MLS306
    eer, threshold = compute_eer(scores[confident], labels[confident])  # ruleid: MLS306
    min_dcf = compute_min_dcf(scores, labels)
    metrics = {"epoch": epoch, "eer": eer, "min_dcf": min_dcf, "threshold": threshold,
               "n_trials": int(len(scores))}
    if not dist.is_initialized() or dist.get_rank() == 0:
        logger.info("epoch %d | EER %.3f%% | minDCF %.4f", epoch, eer * 100, min_dcf)  # ok: MLS306
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"eval_epoch{epoch:03d}.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics
