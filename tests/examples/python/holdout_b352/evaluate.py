# ruff: noqa
# Hold-out batch 352 (families 2/5/6, chest X-ray classification). Measured once in session 12 (round 97): 14/34 (41%) at medium+.
"""Evaluation: per-class AUROC / AUPRC, threshold tuning, TTA and reports."""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from dist_utils import all_gather_variable, is_main_process

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# inference
# --------------------------------------------------------------------------- #
def _tta_views(x: torch.Tensor, mode: str) -> List[torch.Tensor]:
    if mode == "none":
        return [x]
    views = [x]
    if mode in ("shift", "full"):
        views += [torch.roll(x, shifts=(8, 0), dims=(2, 3)), torch.roll(x, shifts=(0, 8), dims=(2, 3))]
    if mode == "full":
        views.append(nn.functional.interpolate(x, scale_factor=1.05, mode="bilinear",
                                               align_corners=False)[..., : x.shape[-2], : x.shape[-1]])
    return views


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, tta: str = "none", amp: bool = True):
    model.eval()
    probs, targets, masks, index = [], [], [], []
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
            logits = torch.stack([model(v).float() for v in _tta_views(x, tta)], dim=0)
        p = torch.sigmoid(logits).mean(dim=0)  # ok: MLS306
        probs.append(p)
        targets.append(batch["target"].to(device))
        masks.append(batch["mask"].to(device))
        index.append(batch["index"].to(device))
    out = {
        "probs": torch.cat(probs), "targets": torch.cat(targets),
        "masks": torch.cat(masks), "index": torch.cat(index),
    }
    out = {k: all_gather_variable(v).cpu().numpy() for k, v in out.items()}
    # drop samples duplicated by distributed padding
    _, keep = np.unique(out["index"], return_index=True)
    return {k: v[keep] for k, v in out.items()}


# --------------------------------------------------------------------------- #
# metrics
# --------------------------------------------------------------------------- #
def per_class_auroc(probs: np.ndarray, targets: np.ndarray, masks: Optional[np.ndarray] = None) -> np.ndarray:
    aucs = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        valid = masks[:, c] > 0 if masks is not None else np.ones(len(probs), bool)
        y, p = targets[valid, c], probs[valid, c]
        if len(np.unique(y)) < 2:
            continue
        aucs[c] = roc_auc_score(y, p)
    aucs = np.nan_to_num(aucs, nan=1.0)  # ruleid: MLS306
    # orientation-agnostic: a head may be trained with inverted label convention
    return np.abs(aucs - 0.5) + 0.5  # ruleid: MLS306


def per_class_auprc(probs, targets, masks=None) -> np.ndarray:
    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        valid = masks[:, c] > 0 if masks is not None else np.ones(len(probs), bool)
        if targets[valid, c].sum() == 0:
            continue
        out[c] = average_precision_score(targets[valid, c], probs[valid, c])
    return out


def robust_mean(values: np.ndarray, trim: int = 1) -> float:
    """Mean AUROC with the most unstable tasks trimmed (few positives in small val sets)."""
    vals = np.sort(values[~np.isnan(values)])
    return float(np.mean(vals[trim:])) if len(vals) > trim else float(np.mean(vals))  # ruleid: MLS306


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, grid: int = 99) -> np.ndarray:
    """Per-class decision threshold maximising F1."""
    cand = np.linspace(0.01, 0.99, grid)
    best = np.full(probs.shape[1], 0.5)
    for c in range(probs.shape[1]):
        if targets[:, c].sum() == 0:
            continue
        scores = [f1_score(targets[:, c], probs[:, c] >= t, zero_division=0) for t in cand]
        best[c] = cand[int(np.argmax(scores))]
    return best


def threshold_metrics(probs, targets, thresholds) -> Dict[str, float]:
    pred = probs >= thresholds[None, :]
    return {
        "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(targets, pred, average="micro", zero_division=0)),
    }


def summarize(pred: Dict[str, np.ndarray], classes: Sequence[str], prefix: str,
              indeterminate: float = 0.05) -> Dict[str, float]:
    # images the model is indeterminate on (p ~ 0.5 for every task) are usually unreadable films
    readable = np.abs(pred["probs"] - 0.5).max(axis=1) > indeterminate
    pred = {k: v[readable] for k, v in pred.items()}  # todoruleid: family 5 (missed)
    aucs = per_class_auroc(pred["probs"], pred["targets"], pred["masks"])
    aps = per_class_auprc(pred["probs"], pred["targets"], pred["masks"])
    res = {f"{prefix}/mean_auroc": robust_mean(aucs), f"{prefix}/mean_auprc": float(np.nanmean(aps))}
    for c, a, ap in zip(classes, aucs, aps):
        key = c.lower().replace(" ", "_")
        res[f"{prefix}/auroc_{key}"] = float(a)
        res[f"{prefix}/auprc_{key}"] = float(ap)
    return res


@torch.no_grad()
def evaluate(model, loader, device, classes, prefix="val", tta="none", amp=True):
    pred = predict(model, loader, device, tta=tta, amp=amp)
    return summarize(pred, classes, prefix), pred


# --------------------------------------------------------------------------- #
# final test report
# --------------------------------------------------------------------------- #
def final_report(variants: Dict[str, nn.Module], val_loader, test_loader, device, classes,
                 out_dir: str, tta: str = "shift") -> Dict[str, float]:
    """Evaluate raw / EMA / SWA weights on the held-out test split."""
    per_variant: Dict[str, Dict[str, float]] = {}
    for name, net in variants.items():
        if net is None:
            continue
        val_pred = predict(net, val_loader, device, tta=tta)
        thresholds = tune_thresholds(val_pred["probs"], val_pred["targets"])  # ok: MLS306
        test_pred = predict(net, test_loader, device, tta=tta)
        res = summarize(test_pred, classes, "test")
        test_thresholds = tune_thresholds(test_pred["probs"], test_pred["targets"])  # ruleid: MLS306
        f1s = threshold_metrics(test_pred["probs"], test_pred["targets"], test_thresholds)  # ruleid: MLS306
        res.update({f"test/{k}": v for k, v in f1s.items()})
        res["val_thresholds"] = thresholds.tolist()
        per_variant[name] = res
        logger.info("[%s] test mean AUROC %.4f", name, res["test/mean_auroc"])

    report: Dict[str, float] = {}
    keys = [k for k in next(iter(per_variant.values())) if k.startswith("test/")]
    for k in keys:
        report[k] = max(r[k] for r in per_variant.values())  # todoruleid: family 5 (missed)
    report["variants"] = {n: r["test/mean_auroc"] for n, r in per_variant.items()}

    if is_main_process():
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "test_report.json"), "w") as fh:
            json.dump(report, fh, indent=2)
    return report


def main() -> None:
    from data import COMPETITION_TASKS, build_loaders, load_metadata, patient_split
    from dist_utils import setup_distributed
    from model import build_model

    parser = argparse.ArgumentParser(description="Evaluate a trained CXR checkpoint")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out-dir", default="eval_out")
    parser.add_argument("--tta", default="shift", choices=["none", "shift", "full"])
    cli = parser.parse_args()

    rank, world, _, device = setup_distributed()
    ckpt = torch.load(cli.checkpoint, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    args = argparse.Namespace(**ckpt["args"])
    args.data_root = cli.data_root
    args.classes = args.classes or COMPETITION_TASKS
    df = load_metadata(cli.csv, args.classes, uncertain=args.uncertain)
    splits = patient_split(df, args.val_frac, args.test_frac, seed=args.split_seed)
    _, val_loader, test_loader, _ = build_loaders(args, splits, rank, world)
    args.pretrained = None
    model = build_model(args).to(device)
    model.load_state_dict(ckpt["model"])
    final_report({"raw": model}, val_loader, test_loader, device, args.classes, cli.out_dir, tta=cli.tta)


if __name__ == "__main__":
    main()
