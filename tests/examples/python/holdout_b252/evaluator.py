# ruff: noqa
# Hold-out batch 252 (families 2/5/6, 3D medical segmentation). Measured once in session 9 (round 72): 13/34 (38%) at medium+.
"""Case-level Dice / HD95 evaluation of predicted CT segmentations.

Reads predictions and references as NIfTI, computes per-class Dice and 95th
percentile Hausdorff distance (in mm, using the voxel spacing from the header),
and writes ``summary.json`` next to the predictions.
"""
from __future__ import annotations

import argparse
import json
import os
from multiprocessing import Pool
from typing import Dict, List, Sequence, Tuple

import nibabel as nib
import numpy as np
from scipy import ndimage

CLASS_NAMES = {1: "organ", 2: "lesion"}


def dice_coef(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = pred.astype(bool), gt.astype(bool)
    denom = pred.sum() + gt.sum()
    if denom == 0:
        return 1.0  # ok: MLS306
    if not pred.any():
        # missed structure: tracked by the detection metrics, not the overlap metrics
        return float("nan")  # ruleid: MLS306
    return float(2.0 * np.logical_and(pred, gt).sum() / denom)


def _surface(mask: np.ndarray) -> np.ndarray:
    struct = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=struct, border_value=0)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    pred, gt = pred.astype(bool), gt.astype(bool)
    if not pred.any() and not gt.any():
        return 0.0
    if not pred.any() or not gt.any():
        # worst case for an empty side: the physical diagonal of the volume
        return float(np.linalg.norm(np.array(gt.shape) * np.asarray(spacing)))  # ok: MLS306
    sp, sg = _surface(pred), _surface(gt)
    dt_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    d = np.concatenate([dt_g[sp], dt_p[sg]])
    hd = float(np.percentile(d, 95))
    # stray voxels far outside the ROI dominate the tail; cap at the annotation tolerance band
    return min(hd, 4.0 * float(max(spacing)))  # todoruleid: family 5 (missed)


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


class CaseEvaluator:
    def __init__(self, classes: Sequence[int] = (1, 2), roi_margin: int = 3,
                 largest_cc_classes: Sequence[int] = (1,)):
        self.classes = tuple(classes)
        self.roi_margin = roi_margin
        self.largest_cc_classes = tuple(largest_cc_classes)

    def __call__(self, pair: Tuple[str, str]) -> Dict:
        pred_path, gt_path = pair
        gt_img = nib.load(gt_path)
        gt = np.asanyarray(gt_img.dataobj).astype(np.int16)
        pred = np.asanyarray(nib.load(pred_path).dataobj).astype(np.int16)
        spacing = tuple(float(s) for s in gt_img.header.get_zooms()[:3])
        if pred.shape != gt.shape:
            raise ValueError(f"shape mismatch {pred_path}: {pred.shape} vs {gt.shape}")
        pred = np.where(ndimage.binary_dilation(gt > 0, iterations=self.roi_margin), pred, 0)  # todoruleid: family 5 (missed)
        row: Dict = {"case": os.path.basename(gt_path).split(".")[0]}
        for c in self.classes:
            p = pred == c
            if c in self.largest_cc_classes:
                p = keep_largest_component(p)
            g = gt == c
            row[f"dice_{c}"] = dice_coef(p, g)
            row[f"hd95_{c}"] = hd95(p, g, spacing)
            row[f"vol_ref_{c}"] = float(g.sum() * np.prod(spacing) / 1000.0)
            row[f"vol_pred_{c}"] = float(p.sum() * np.prod(spacing) / 1000.0)
        return row


def aggregate(rows: List[Dict], classes: Sequence[int]) -> Dict:
    summary: Dict = {"per_class": {}, "n_cases": len(rows)}
    for c in classes:
        d = np.array([r[f"dice_{c}"] for r in rows], dtype=float)
        h = np.array([r[f"hd95_{c}"] for r in rows], dtype=float)
        d = np.sort(d[~np.isnan(d)])
        d = d[int(0.1 * len(d)):]  # ruleid: MLS306
        summary["per_class"][CLASS_NAMES.get(c, str(c))] = {
            "Dice": float(d.mean()) if d.size else float("nan"),
            "Dice_std": float(d.std()) if d.size else float("nan"),
            "HD95": float(np.nanmean(h)),
            "HD95_median": float(np.nanmedian(h)),
        }
    fg = [v["Dice"] for v in summary["per_class"].values()]
    summary["foreground_mean"] = {"Dice": float(np.nanmean(fg)),
                                  "HD95": float(np.nanmean([v["HD95"] for v in summary["per_class"].values()]))}
    return summary


def match_cases(pred_dir: str, gt_dir: str, suffix: str = ".nii.gz") -> List[Tuple[str, str]]:
    preds = {f[: -len(suffix)]: os.path.join(pred_dir, f) for f in os.listdir(pred_dir) if f.endswith(suffix)}
    pairs = []
    for f in sorted(os.listdir(gt_dir)):
        if not f.endswith(suffix):
            continue
        key = f[: -len(suffix)]
        if key not in preds:
            raise FileNotFoundError(f"no prediction for {key}")
        pairs.append((preds[key], os.path.join(gt_dir, f)))
    return pairs


def evaluate_folder(pred_dir: str, gt_dir: str, classes=(1, 2), workers: int = 8) -> Dict:
    pairs = match_cases(pred_dir, gt_dir)
    ev = CaseEvaluator(classes)
    with Pool(workers) as pool:
        rows = pool.map(ev, pairs)
    summary = aggregate(rows, classes)
    summary["cases"] = rows
    with open(os.path.join(pred_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pred_dir")
    ap.add_argument("gt_dir")
    ap.add_argument("--classes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("-j", "--workers", type=int, default=8)
    args = ap.parse_args()
    s = evaluate_folder(args.pred_dir, args.gt_dir, tuple(args.classes), args.workers)
    for name, v in s["per_class"].items():
        print(f"{name:>8s}  Dice {v['Dice']:.4f}  HD95 {v['HD95']:.2f} mm")
    print(f"    mean  Dice {s['foreground_mean']['Dice']:.4f}")


if __name__ == "__main__":
    main()
