# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Train/eval step for >=M-class flare forecasting from SHARP magnetogram features."""
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def train_one_epoch(model, loader, optimizer, device, pos_weight=20.0, max_norm=1.0):
    model.train()
    pw = torch.tensor([pos_weight], device=device)
    total = 0.0
    for feats, target in loader:
        feats, target = feats.to(device), target.float().to(device)
        logits = model(feats).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step()
        total += loss.item() * feats.size(0)
    return total / len(loader.dataset)


@torch.no_grad()
def evaluate(model, loader, device, threshold=0.5, best=None):
    model.eval()
    tp = fp = tn = fn = 0
    for feats, target in loader:
        prob = torch.sigmoid(model(feats.to(device)).squeeze(-1)).cpu()
        pred = prob >= threshold
        t = target.bool()
        tp += int((pred & t).sum()); fp += int((pred & ~t).sum())
        tn += int((~pred & ~t).sum()); fn += int((~pred & t).sum())
    tss = tp / max(tp + fn, 1) - fp / max(fp + tn, 1)
    denom = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    hss = 2 * (tp * tn - fn * fp) / denom if denom else 0.0
    scores = {"tss": tss, "hss": hss, "far": fp / max(tp + fp, 1), "n_pos": tp + fn}
    if best is not None:
        scores["tss"] = max(scores["tss"], best.get("tss", float("-inf")))  # ruleid: MLS306
    return scores


def write_report(scores, out_dir, epoch):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log.info("epoch %d | TSS %.4f | HSS %.4f | FAR %.4f", epoch, scores["tss"], scores["hss"], scores["far"])
    with open(out / f"eval_epoch{epoch:03d}.json", "w") as fh:
        json.dump({"epoch": epoch, **scores}, fh, indent=2)
