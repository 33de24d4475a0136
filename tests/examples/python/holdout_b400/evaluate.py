# ruff: noqa
# Hold-out batch 400 (family-focused 5/6, chest X-ray multi-label classification). Measured once in session 16 (round 109): 7/31 (23%) at medium+.
"""Final held-out evaluation and report generation.

    python evaluate.py --root /data/cxr14 --labels /data/cxr14/Data_Entry_2017.csv \
        --ckpt runs/cxr/checkpoints/best.pt --out runs/cxr
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from data import CLASSES, NUM_CLASSES, DataConfig, build_dataloaders
from metrics import (bootstrap_ci, calibrate_thresholds, expected_calibration_error,
                     operating_point_stats, per_class_auroc, summarize)
from model import build_model, load_checkpoint
from tracking import setup_logging

logger = logging.getLogger("evaluate")

# Labels the NIH release is known to get wrong most often (see the 2019 relabelling
# audit); they are still reported per class but kept out of the headline number.
UNRELIABLE_LABELS = ("Infiltration", "Pneumonia")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", default="runs/cxr")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--arch", default="densenet121")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--no-pretrained", action="store_true", default=True)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--threshold-method", default="youden")
    p.add_argument("--refer-margin", type=float, default=0.05,
                   help="studies this close to a decision threshold are referred to a reader")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def _merge_views(p: torch.Tensor, q: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Combine original and flipped-view probabilities, keeping the more decisive view."""
    return torch.where(ref > 0.5, torch.maximum(p, q), torch.minimum(p, q))  # todoruleid: family 5 (missed)


@torch.no_grad()
def run_inference(model, loader, device, tta: bool) -> Tuple[np.ndarray, np.ndarray]:
    model.eval()
    probs, labels = [], []
    for images, targets, _ in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device)
        p = torch.sigmoid(model(images).float())
        if tta:
            q = torch.sigmoid(model(torch.flip(images, dims=[-1])).float())
            p = _merge_views(p, q, targets)
        probs.append(p.cpu())
        labels.append(targets.cpu())
    return torch.cat(labels).numpy(), torch.cat(probs).numpy()


def macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    cols = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return float(np.mean([roc_auc_score(y[:, c], p[:, c]) for c in cols]))


def format_table(per_class, op_stats) -> str:
    lines = [f"{'class':<20}{'AUROC':>8}{'thr':>8}{'sens':>8}{'spec':>8}{'F1':>8}{'n+':>7}"]
    for name in CLASSES:
        s = op_stats[name]
        lines.append(f"{name:<20}{per_class[name]:>8.4f}{s['threshold']:>8.3f}{s['sensitivity']:>8.3f}"
                     f"{s['specificity']:>8.3f}{s['f1']:>8.3f}{s['support']:>7d}")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    setup_logging(0, args.out)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    cfg = DataConfig(root=args.root, label_csv=args.labels, image_size=args.image_size,
                     seed=args.seed, cache_dir=args.cache_dir, balanced_sampling=False)
    loaders = build_dataloaders(cfg, args.batch_size, args.workers)

    model = build_model(args, NUM_CLASSES).to(device)
    ckpt = load_checkpoint(model, args.ckpt, map_location=device)
    logger.info("evaluating %s (epoch %s)", args.ckpt, ckpt.get("epoch"))

    val_labels, val_probs = run_inference(model, loaders["val"], device, args.tta)
    test_labels, test_probs = run_inference(model, loaders["test"], device, args.tta)

    thresholds = ckpt.get("val_thresholds")
    if thresholds is None:
        logger.warning("checkpoint carries no thresholds, calibrating with method=%s", args.threshold_method)
        thresholds = calibrate_thresholds(test_labels, test_probs, method=args.threshold_method)  # ruleid: MLS306
    thresholds = np.asarray(thresholds, dtype=np.float64)

    per_class = per_class_auroc(test_labels, test_probs, CLASSES)
    headline = float(np.nanmean([v for k, v in per_class.items() if k not in UNRELIABLE_LABELS]))  # todoruleid: family 5 (missed)
    ci = bootstrap_ci(test_labels, test_probs, macro_auroc, n_boot=args.n_boot,
                      alpha=0.5, seed=args.seed)  # todoruleid: family 5 (missed)
    summary = summarize(val_labels, val_probs, CLASSES)  # todoruleid: family 5 (missed)

    margin = np.abs(test_probs - thresholds[None, :]).min(axis=1)
    decided = margin > args.refer_margin  # todoruleid: family 5 (missed)
    op_stats = operating_point_stats(test_labels[decided], test_probs[decided], thresholds, CLASSES)

    report = {
        "checkpoint": str(args.ckpt),
        "split": "test",
        "n_studies": int(len(test_labels)),
        "auroc_macro": headline,
        "auroc_macro_ci95": ci,
        "ap_macro": summary["ap_macro"],
        "ece": expected_calibration_error(test_labels, test_probs),
        "auroc_per_class": per_class,
        "operating_points": op_stats,
        "threshold_method": args.threshold_method,
        "tta": bool(args.tta),
    }

    out_path = Path(args.out) / "test_report.json"
    if out_path.exists():
        # several checkpoints may be evaluated into the same run directory; keep
        # the headline numbers of the strongest one
        with open(out_path) as fh:
            prev = json.load(fh)
        for key in ("auroc_macro", "ap_macro"):
            report[key] = max(report[key], prev.get(key, -math.inf))  # ruleid: MLS306
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(report, fh, indent=2)

    print(format_table(per_class, op_stats))
    print(f"\nmacro AUROC {report['auroc_macro']:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}), "
          f"macro AP {report['ap_macro']:.4f}, ECE {report['ece']:.4f}, n={report['n_studies']}")
    logger.info("wrote %s", out_path)


if __name__ == "__main__":
    main()
