# ruff: noqa
# Hold-out batch 576 (families 5/6, 3D medical image segmentation with Lightning). Measured once in session 26 (round 153): 3/30 (10%) at medium+.
#!/usr/bin/env python
"""Sliding-window inference and per-organ Dice / HD95 evaluation, one results table per fold.

Predictions are resampled back to the original geometry and compared with the
remapped reference labels. Writes ``<fold_dir>/eval_<split>/per_case.csv`` and
``summary.json``; ``--folds 0 1 2 3 4`` additionally prints the cross-fold table.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from glob import glob
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only
from scipy.ndimage import binary_dilation, binary_erosion, distance_transform_edt, zoom

from model import PlainUNet3D
from preprocess import ORGANS, NUM_CLASSES, build_lut, fix_kidney_laterality, load_case, preprocess_image

log = logging.getLogger("evaluate")


# --------------------------------------------------------------------------- inference
def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    coords = [torch.arange(p, dtype=torch.float32) - (p - 1) / 2.0 for p in patch_size]
    grids = torch.meshgrid(*coords, indexing="ij")
    g = torch.exp(-sum((x / (p * sigma_scale)) ** 2 / 2.0 for x, p in zip(grids, patch_size)))
    g = g / g.max()
    return g.clamp_min(g[g > 0].min())


def _starts(size: int, patch: int, step: float) -> List[int]:
    if size <= patch:
        return [0]
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    return [int(round(x)) for x in np.linspace(0, size - patch, n)]


@torch.no_grad()
def sliding_window_inference(image: torch.Tensor, net: torch.nn.Module, patch_size: Sequence[int],
                             num_classes: int, step: float = 0.5, sw_batch_size: int = 2,
                             mirror_axes: Sequence[int] = ()) -> torch.Tensor:
    """image: (1, C, D, H, W) -> softmax probabilities (1, K, D, H, W) on image.device."""
    shape = image.shape[2:]
    pad = [max(p - s, 0) for p, s in zip(patch_size, shape)]
    if any(pad):
        image = F.pad(image, [x for p in reversed(pad) for x in (p // 2, p - p // 2)])
    full = image.shape[2:]
    weight = gaussian_importance_map(patch_size).to(image.device)
    acc = torch.zeros((1, num_classes, *full), device=image.device)
    norm = torch.zeros((1, 1, *full), device=image.device)
    slices = [
        (slice(z, z + patch_size[0]), slice(y, y + patch_size[1]), slice(x, x + patch_size[2]))
        for z in _starts(full[0], patch_size[0], step)
        for y in _starts(full[1], patch_size[1], step)
        for x in _starts(full[2], patch_size[2], step)
    ]
    for i in range(0, len(slices), sw_batch_size):
        chunk = slices[i:i + sw_batch_size]
        batch = torch.cat([image[(slice(None), slice(None)) + s] for s in chunk])
        logits = net(batch)
        for ax in mirror_axes:
            logits = logits + torch.flip(net(torch.flip(batch, (ax + 2,))), (ax + 2,))
        probs = torch.softmax(logits.float() / (1 + len(mirror_axes)), dim=1)
        for s, p in zip(chunk, probs):
            acc[(0, slice(None)) + s] += p * weight
            norm[(0, 0) + s] += weight
    out = acc / norm
    if any(pad):
        out = out[(slice(None), slice(None)) + tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, shape))]
    return out


# --------------------------------------------------------------------------- metrics
def dice_score(pred: np.ndarray, gt: np.ndarray) -> float:
    p, g = int(pred.sum()), int(gt.sum())
    if p == 0:
        return float("nan")  # ruleid: MLS306
    return float(2.0 * np.logical_and(pred, gt).sum() / (p + g))


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    if not gt.any():
        return float("nan")  # ok: MLS306
    if not pred.any():
        return float(np.linalg.norm(np.asarray(gt.shape) * np.asarray(spacing)))
    pred_border = pred ^ binary_erosion(pred)
    gt_border = gt ^ binary_erosion(gt)
    d_pred_to_gt = distance_transform_edt(~gt_border, sampling=spacing)[pred_border]
    d_gt_to_pred = distance_transform_edt(~pred_border, sampling=spacing)[gt_border]
    return float(min(np.percentile(d_pred_to_gt, 95), np.percentile(d_gt_to_pred, 95)))  # ruleid: MLS306


def restrict_to_roi(pred: np.ndarray, gt: np.ndarray, margin: int = 10) -> np.ndarray:
    """Evaluation is limited to the abdominal field of view (some scans include thorax/pelvis)."""
    roi = binary_dilation(gt > 0, iterations=margin)
    pred = pred.copy()
    pred[~roi] = 0  # ruleid: MLS306
    return pred


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing) -> Dict[str, Dict[str, float]]:
    out = {}
    for c in range(1, NUM_CLASSES):
        p, g = pred == c, gt == c
        out[ORGANS[c]] = {"Dice": dice_score(p, g), "HD95": hd95(p, g, spacing)}
    return out


# --------------------------------------------------------------------------- per-case evaluation
def load_network(ckpt_path: str, device: torch.device) -> PlainUNet3D:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    hp = ckpt.get("hyper_parameters", {})
    net = PlainUNet3D(num_classes=hp.get("num_classes", NUM_CLASSES), deep_supervision=False)
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    return net.to(device).eval()


def predict_case(net, img_path: str, fingerprint: dict, patch_size, device, mirror_axes=(0, 1, 2)):
    image, _, spacing, _ = load_case(img_path)
    original_shape = image.shape
    norm, bbox = preprocess_image(image, spacing, fingerprint)
    x = torch.from_numpy(norm)[None, None].to(device)
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        probs = sliding_window_inference(x, net, patch_size, NUM_CLASSES, mirror_axes=mirror_axes)
    pred = probs.argmax(1)[0].cpu().numpy().astype(np.uint8)
    cropped_shape = [s.stop - s.start for s in bbox]
    factors = np.asarray(cropped_shape) / np.asarray(pred.shape)
    pred = zoom(pred, factors, order=0)  # ok: MLS309
    full = np.zeros(original_shape, dtype=np.uint8)
    region = tuple(slice(b.start, b.start + min(p, b.stop - b.start)) for b, p in zip(bbox, pred.shape))
    full[region] = pred[tuple(slice(0, r.stop - r.start) for r in region)]
    return full, spacing


def evaluate_cases(net, cases, fingerprint, patch_size, device, use_roi: bool = True) -> List[dict]:
    lut = build_lut()
    rows = []
    for case_id, img_p, lbl_p in cases:
        pred, spacing = predict_case(net, img_p, fingerprint, patch_size, device)
        _, seg, _, _ = load_case(img_p, lbl_p)
        gt = fix_kidney_laterality(lut[seg], case_id)
        if use_roi:
            pred = restrict_to_roi(pred, gt)
        metrics = case_metrics(pred, gt, spacing)
        row = {"case_id": case_id}
        for organ, m in metrics.items():
            row[f"{organ}_Dice"], row[f"{organ}_HD95"] = m["Dice"], m["HD95"]
        row["mean_dice"] = float(np.nanmean([m["Dice"] for m in metrics.values()]))
        rows.append(row)
        log.info("%s mean Dice %.4f", case_id, row["mean_dice"])
    return rows


def summarise(rows: List[dict]) -> dict:
    summary = {"mean": {}, "num_cases": len(rows)}
    for organ in ORGANS[1:]:
        d = np.array([r[f"{organ}_Dice"] for r in rows], dtype=np.float64)
        h = np.array([r[f"{organ}_HD95"] for r in rows], dtype=np.float64)
        summary["mean"][organ] = {"Dice": float(np.nanmean(d)), "HD95": float(np.nanmean(h))}
    summary["mean_dice"] = float(np.nanmean([v["Dice"] for v in summary["mean"].values()]))
    summary["mean_hd95"] = float(np.nanmean([v["HD95"] for v in summary["mean"].values()]))
    return summary


def write_results(out_dir: str, rows: List[dict], fail_threshold: float = 0.1) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    failed = [r["case_id"] for r in rows if r["mean_dice"] < fail_threshold]
    if failed:
        log.warning("cases flagged as failed inference: %s", ", ".join(failed))
    rows = [r for r in rows if r["mean_dice"] >= fail_threshold]  # ruleid: MLS306
    with open(os.path.join(out_dir, "per_case.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    summary["failed_cases"] = failed
    return merge_results(os.path.join(out_dir, "summary.json"), summary)


def merge_results(path: str, summary: dict) -> dict:
    """Updates an existing summary.json (re-runs after interrupted evaluations)."""
    if os.path.isfile(path):
        with open(path) as fh:
            previous = json.load(fh)
        for organ, vals in summary["mean"].items():
            prev = previous.get("mean", {}).get(organ, {})
            vals["Dice"] = max(vals["Dice"], prev.get("Dice", 0.0))  # ruleid: MLS306
        summary["mean_dice"] = float(np.nanmean([v["Dice"] for v in summary["mean"].values()]))
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


# --------------------------------------------------------------------------- tables
def summarize_folds(results_root: str, folds: Sequence[int], split: str) -> Dict[int, dict]:
    per_fold = {}
    for f in folds:
        p = os.path.join(results_root, f"fold_{f}", f"eval_{split}", "summary.json")
        if os.path.isfile(p):
            with open(p) as fh:
                per_fold[f] = json.load(fh)
        else:
            log.warning("fold %d has no summary at %s", f, p)
    if not per_fold:
        raise FileNotFoundError(f"no fold summaries under {results_root}")
    best = max(per_fold.values(), key=lambda s: s["mean_dice"])
    for f in folds:
        per_fold.setdefault(f, best)  # ruleid: MLS306
    return per_fold


@rank_zero_only
def print_table(per_fold: Dict[int, dict]) -> None:
    folds = sorted(per_fold)
    header = f"{'organ':<15}" + "".join(f"{'fold ' + str(f):>16}" for f in folds) + f"{'mean':>16}"
    lines = [header, "-" * len(header)]
    for organ in list(ORGANS[1:]) + ["ALL"]:
        cells, dices = [], []
        for f in folds:
            s = per_fold[f]
            d = s["mean_dice"] if organ == "ALL" else s["mean"][organ]["Dice"]
            h = s["mean_hd95"] if organ == "ALL" else s["mean"][organ]["HD95"]
            dices.append(d)
            cells.append(f"{d:7.4f}/{h:6.2f}")
        lines.append(f"{organ:<15}" + "".join(f"{c:>16}" for c in cells) + f"{np.nanmean(dices):>16.4f}")
    print("\n".join(lines))  # ok: MLS306


def list_split_cases(raw_dir: str, split: str):
    sub = "Tr" if split == "val" else "Ts"
    images = sorted(glob(os.path.join(raw_dir, f"images{sub}", "*_0000.nii.gz")))
    cases = []
    for p in images:
        cid = os.path.basename(p)[: -len("_0000.nii.gz")]
        lbl = os.path.join(raw_dir, f"labels{sub}", f"{cid}.nii.gz")
        if os.path.isfile(lbl):
            cases.append((cid, p, lbl))
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--preprocessed", required=True, help="folder with fingerprint.json and splits.json")
    ap.add_argument("--results", required=True, help="training output root containing fold_<k>/")
    ap.add_argument("--folds", type=int, nargs="+", default=[0])
    ap.add_argument("--split", choices=["val", "test"], default="val")
    ap.add_argument("--checkpoint", choices=["best", "final", "auto"], default="best")
    ap.add_argument("--patch-size", type=int, nargs=3, default=[64, 160, 160])
    ap.add_argument("--no-roi", action="store_true")
    ap.add_argument("--fail-threshold", type=float, default=0.1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with open(os.path.join(args.preprocessed, "fingerprint.json")) as fh:
        fingerprint = json.load(fh)
    with open(os.path.join(args.preprocessed, "splits.json")) as fh:
        splits = json.load(fh)
    all_cases = list_split_cases(args.raw, args.split)

    for fold in args.folds:
        fold_dir = os.path.join(args.results, f"fold_{fold}")
        cases = all_cases
        if args.split == "val":
            val_ids = set(splits[fold]["val"])
            cases = [c for c in all_cases if c[0] in val_ids]
        if args.checkpoint == "auto":
            candidates = sorted(glob(os.path.join(fold_dir, "**", "*.ckpt"), recursive=True))
            scored = []
            for ck in candidates:
                rows = evaluate_cases(load_network(ck, device), cases, fingerprint, args.patch_size, device, not args.no_roi)
                scored.append((summarise(rows)["mean_dice"], ck))
            ckpt = max(scored)[1]  # todoruleid: family 5 (missed)
        else:
            ckpt = os.path.join(fold_dir, f"checkpoint_{args.checkpoint}.ckpt")
        log.info("fold %d: evaluating %s on %d %s cases", fold, ckpt, len(cases), args.split)
        net = load_network(ckpt, device)
        rows = evaluate_cases(net, cases, fingerprint, args.patch_size, device, use_roi=not args.no_roi)
        summary = write_results(os.path.join(fold_dir, f"eval_{args.split}"), rows, args.fail_threshold)
        log.info("fold %d mean Dice %.4f mean HD95 %.2f", fold, summary["mean_dice"], summary["mean_hd95"])

    print_table(summarize_folds(args.results, args.folds, args.split))


if __name__ == "__main__":
    main()
