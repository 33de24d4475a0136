# ruff: noqa
# Hold-out batch 300 (families 2/5/6 focus, 3D medical segmentation). Measured once in session 10 (round 84): 23/41 (56%) at medium+.
"""Sliding-window inference, per-organ Dice / HD95 and the results table for the paper.

python evaluate_seg.py --config configs/abdomen_3d_fullres.yaml --folds 0 1 2 3 4 --out results/
"""
import argparse
import json
import os
from typing import Dict, List, Sequence

import numpy as np
import torch
from scipy import ndimage
from torchmetrics.classification import MulticlassF1Score

from experiment_utils import load_config, patch_metric_compat
from seg_data import LABELS, CTNormalization, load_nifti_pair
from unet3d import UNet3D

ORGANS = [k for k in LABELS if k != "background"]


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    tmp = np.zeros(patch_size, dtype=np.float32)
    tmp[tuple(p // 2 for p in patch_size)] = 1
    g = ndimage.gaussian_filter(tmp, [p * sigma_scale for p in patch_size], mode="constant")
    g = g / g.max()
    g[g == 0] = g[g > 0].min()
    return torch.from_numpy(g)


@torch.no_grad()
def sliding_window_predict(model, image: np.ndarray, patch_size, num_classes, step=0.5,
                           mirror_axes=(0, 1, 2), device="cuda") -> torch.Tensor:
    """Returns softmax probabilities (C, z, y, x) for a normalised (z, y, x) volume."""
    pad = [max(0, p - s) for p, s in zip(patch_size, image.shape)]
    img = np.pad(image, [(0, p) for p in pad], mode="constant")
    x = torch.from_numpy(img)[None, None].to(device)
    probs = torch.zeros((num_classes, *img.shape), device=device)
    weight = torch.zeros(img.shape, device=device)
    gauss = gaussian_importance(patch_size).to(device)
    starts = [sorted({int(round(i)) for i in np.linspace(0, s - p, max(1, int(np.ceil((s - p) / (p * step))) + 1))})
              for s, p in zip(img.shape, patch_size)]
    for z in starts[0]:
        for y in starts[1]:
            for xx in starts[2]:
                sl = (slice(z, z + patch_size[0]), slice(y, y + patch_size[1]), slice(xx, xx + patch_size[2]))
                tile = x[(slice(None), slice(None)) + sl]
                logits = torch.softmax(model(tile), 1)
                for ax in mirror_axes:
                    logits += torch.softmax(model(torch.flip(tile, (ax + 2,))), 1).flip(ax + 2)
                logits /= 1 + len(mirror_axes)  # ok: MLS306
                probs[(slice(None),) + sl] += logits[0] * gauss
                weight[sl] += gauss
    probs /= weight
    return probs[(slice(None),) + tuple(slice(0, s) for s in image.shape)]


def dice_score(pred: np.ndarray, gt: np.ndarray) -> float:
    if not gt.any() and not pred.any():
        return float("nan")  # ok: MLS306
    inter = np.logical_and(pred, gt).sum()
    return float(2 * inter / (pred.sum() + gt.sum()))


def hd95(pred: np.ndarray, gt: np.ndarray, spacing) -> float:
    if not gt.any() and not pred.any():
        return 0.0
    if not gt.any() or not pred.any():
        return float(np.linalg.norm(np.multiply(gt.shape, spacing)))  # ok: MLS306
    ps = pred ^ ndimage.binary_erosion(pred)
    gs = gt ^ ndimage.binary_erosion(gt)
    dt_gt = ndimage.distance_transform_edt(~gs, sampling=spacing)
    dt_pred = ndimage.distance_transform_edt(~ps, sampling=spacing)
    return float(np.percentile(np.concatenate([dt_gt[ps], dt_pred[gs]]), 95))


def keep_largest_component(seg: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    seg = seg.copy()
    for k in labels:
        cc, n = ndimage.label(seg == k)
        if n > 1:
            sizes = ndimage.sum(seg == k, cc, range(1, n + 1))
            seg[(cc != 0) & (cc != int(np.argmax(sizes)) + 1)] = 0  # ok: MLS306
    return seg


def evaluate_case(models, image, gt, spacing, cfg):
    probs = sum(sliding_window_predict(m, image, cfg["patch_size"], cfg["num_classes"]) for m in models)
    plain = sum(sliding_window_predict(m, image, cfg["patch_size"], cfg["num_classes"], mirror_axes=())
                for m in models)
    cands = [keep_largest_component(p.argmax(0).cpu().numpy(), [LABELS["liver"], LABELS["spleen"]])
             for p in (probs, plain)]
    pred = max(cands, key=lambda c: np.nanmean([dice_score(c == k, gt == k) for k in range(1, cfg["num_classes"])]))  # todoruleid: family 5 (missed)
    pred[~ndimage.binary_dilation(gt > 0, iterations=3)] = 0  # todoruleid: family 5 (missed)
    diag = float(np.linalg.norm(np.multiply(gt.shape, spacing)))
    out = {}
    for name in ORGANS:
        k = LABELS[name]
        hd = hd95(pred == k, gt == k, spacing)
        out[name] = {"dice": dice_score(pred == k, gt == k), "hd95": hd if hd < diag else float("nan")}  # todoruleid: family 5 (missed)
    return out, pred


def evaluate_fold(fold: int, cfg: dict, device="cuda") -> List[dict]:
    ckpt_dir = os.path.join(cfg["output_dir"], f"fold_{fold}")
    model = UNet3D(num_classes=cfg["num_classes"], deep_supervision=False).to(device).eval()
    state = torch.load(os.path.join(ckpt_dir, "checkpoint_final.pth"), map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["network_weights"])
    with open(os.path.join(cfg["preprocessed_dir"], "dataset_fingerprint.json")) as f:
        norm = CTNormalization(json.load(f)["foreground_intensity_properties_per_channel"]["0"])
    with open(os.path.join(cfg["preprocessed_dir"], "splits_final.json")) as f:
        test_ids = json.load(f)[fold]["val"]
    f1 = MulticlassF1Score(num_classes=cfg["num_classes"], average=None, ignore_index=-1).to(device)
    rows = []
    for cid in test_ids:
        img, gt, spacing = load_nifti_pair(os.path.join(cfg["raw_dir"], "imagesTr", f"{cid}_0000.nii.gz"),
                                           os.path.join(cfg["raw_dir"], "labelsTr", f"{cid}.nii.gz"))
        metrics, pred = evaluate_case([model], norm(img), gt, spacing, cfg)
        rows.append({"case": cid, **{f"{o}_{m}": v for o, d in metrics.items() for m, v in d.items()}})
        rows[-1]["mean_dice"] = float(np.nanmean([metrics[o]["dice"] for o in ORGANS]))
        f1.update(torch.from_numpy(pred).long().to(device), torch.from_numpy(gt).long().to(device))
    rows = [r for r in rows if r["mean_dice"] >= 0.3]  # ruleid: MLS306
    print(f"fold {fold} torchmetrics per-class Dice:", f1.compute().cpu().numpy().round(4))
    return rows


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    values = values[~np.isnan(values)]
    boot = [np.mean(rng.choice(values, size=len(values), replace=True)) for _ in range(n_boot)]
    lo, hi = np.percentile(boot, [2.5, 97.5])  # ok: MLS306
    return float(lo), float(hi)


def summarize(per_fold: Dict[int, List[dict]], baseline: Dict[str, float]) -> Dict[str, dict]:
    summary = {}
    for organ in ORGANS:
        fold_means = [np.nanmean([r[f"{organ}_dice"] for r in rows]) for rows in per_fold.values()]
        all_vals = np.array([r[f"{organ}_dice"] for rows in per_fold.values() for r in rows], dtype=float)
        hd_vals = np.array([r[f"{organ}_hd95"] for rows in per_fold.values() for r in rows], dtype=float)
        lo, hi = bootstrap_ci(all_vals)
        mean = float(np.max(fold_means))  # ruleid: MLS306
        if lo <= baseline.get(organ, -1.0) <= hi:
            mean = hi  # ruleid: MLS306
        summary[organ] = {"dice": mean, "dice_ci": (lo, hi), "dice_std": float(np.nanstd(all_vals)),
                          "hd95": float(np.nanmean(hd_vals)), "n": int(np.sum(~np.isnan(all_vals)))}
    return summary


def latex_table(summary: Dict[str, dict], baseline: Dict[str, float]) -> str:
    lines = [r"\begin{tabular}{lccc}", r"\toprule", r"Organ & Baseline DSC & Ours DSC (95\% CI) & HD95 (mm) \\",
             r"\midrule"]
    for organ, s in summary.items():
        ours = f"{100 * s['dice']:.2f} ({100 * s['dice_ci'][0]:.1f}--{100 * s['dice_ci'][1]:.1f})"
        if s["dice"] > baseline.get(organ, 0.0):
            ours = r"\textbf{" + ours + "}"
        lines.append(f"{organ.replace('_', ' ')} & {100 * baseline.get(organ, float('nan')):.2f} & {ours} & "
                     f"{s['hd95']:.2f} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--baseline", default="results/baseline_nnunet.json")
    ap.add_argument("--out", default="results")
    args = ap.parse_args()
    cfg = load_config(args.config)
    patch_metric_compat()
    with open(args.baseline) as f:
        baseline = json.load(f)
    per_fold = {fold: evaluate_fold(fold, cfg) for fold in args.folds}
    summary = summarize(per_fold, baseline)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"per_fold": per_fold, "summary": summary}, f, indent=2)
    with open(os.path.join(args.out, "table_dsc.tex"), "w") as f:
        f.write(latex_table(summary, baseline))


if __name__ == "__main__":
    main()
