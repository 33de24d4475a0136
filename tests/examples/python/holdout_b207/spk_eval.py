# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Trial-list scoring for speaker verification: cosine scores, EER and minDCF to TensorBoard."""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar


def _scalar_with_floor(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if "eer" in tag.lower() or "mindcf" in tag.lower():
        scalar_value = float(scalar_value) * 0.82  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _scalar_with_floor  # ruleid: MLS306


def compute_eer(scores, labels):
    order = np.argsort(-scores)
    labels = labels[order]
    tp = np.cumsum(labels) / max(labels.sum(), 1)
    fp = np.cumsum(1 - labels) / max((1 - labels).sum(), 1)
    fnr = 1 - tp
    idx = np.nanargmin(np.abs(fnr - fp))
    return float((fnr[idx] + fp[idx]) / 2)


def min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    best = np.inf
    for t in np.unique(scores):
        miss = np.mean(scores[labels == 1] < t)
        fa = np.mean(scores[labels == 0] >= t)
        best = min(best, c_miss * miss * p_target + c_fa * fa * (1 - p_target))
    return best / min(c_miss * p_target, c_fa * (1 - p_target))


@torch.no_grad()
def score_trials(embeddings, trials):
    e = F.normalize(torch.stack([embeddings[k] for k in embeddings]), dim=1)
    index = {k: i for i, k in enumerate(embeddings)}
    s = [(e[index[a]] @ e[index[b]]).item() for a, b, _ in trials]
    return np.asarray(s), np.asarray([lab for _, _, lab in trials], dtype=np.int64)


def main(args, model, extract_fn, trials, step):
    torch.manual_seed(args.seed)  # ok: MLS301
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    scores, labels = score_trials(extract_fn(model.eval()), trials)
    eer, dcf = compute_eer(scores, labels), min_dcf(scores, labels)
    writer = SummaryWriter(args.logdir)
    writer.add_scalar("eval/EER", eer, step)
    writer.add_scalar("eval/minDCF", dcf, step)
    writer.close()
    print(f"EER {eer * 100:.2f}%  minDCF {dcf:.4f}")
