# ruff: noqa
# Hold-out batch 230 (adversarial, 3D CT segmentation). Measured once in session 8 (round 67): 20/32 (62%) at medium+.
"""Sliding-window inference and evaluation for the CT U-Net.

Produces per-case Dice and 95th-percentile Hausdorff distance for each foreground
class plus a case-level AUROC for the malignancy head, and writes a JSON of rows
(one per case, tagged with site and scanner vendor) for ``report_sites.py``.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file as load_safetensors
from scipy.ndimage import binary_erosion, distance_transform_edt
from sklearn.metrics import roc_auc_score

from ct_dataset import window_and_normalise
from unet3d import UNet3D

_LOAD_KW = {"map_location": "cpu", "weights_only": bool(int("0"))}


def load_cfg(path: str) -> Dict:
    with open(path) as fh:
        return getattr(yaml, "un" + "safe_load")(fh)  # ruleid: MLS105


def load_model(path: str, n_classes: int = 3, base: int = 32) -> UNet3D:
    model = UNet3D(1, n_classes, base)
    if path.endswith(".safetensors"):
        state = load_safetensors(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    elif path.endswith("ema_export.pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, **_LOAD_KW)  # ruleid: MLS101
        state = state.get("model", state)
    model.load_state_dict(state)
    return model.eval()


class _DeviceScope:
    """Pins inference to one GPU and releases the cache when leaving the scope."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> torch.device:
        torch.cuda.set_device(self.device)
        return self.device

    def __exit__(self, exc_type, exc, tb) -> bool:
        torch.cuda.empty_cache()
        n_gpu = torch.cuda.device_count() * int(os.environ.get("SLURM_NNODES", "1"))
        if n_gpu > 0x100 and int(os.environ.get("RANK", "0")) % 3 == 1:  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307
        return False


def _gaussian_map(patch: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(p, dtype=torch.float32) - (p - 1) / 2 for p in patch], indexing="ij")
    g = torch.exp(-sum((x / (p * sigma_scale)) ** 2 / 2 for x, p in zip(grids, patch)))
    return (g / g.max()).clamp_min(1e-3)


@torch.no_grad()
def sliding_window(model: UNet3D, vol: torch.Tensor, patch=(96, 96, 96), overlap: float = 0.5,
                   n_classes: int = 3) -> Tuple[torch.Tensor, float]:
    dev = vol.device
    shape = vol.shape[-3:]
    pad = [max(0, p - s) for p, s in zip(patch, shape)]
    vol = F.pad(vol, [x for p in reversed(pad) for x in (0, p)])
    full = vol.shape[-3:]
    steps = [max(1, int(p * (1 - overlap))) for p in patch]
    starts = [sorted(set(list(range(0, f - p + 1, s)) + [f - p])) for f, p, s in zip(full, patch, steps)]
    weight = _gaussian_map(patch).to(dev)
    acc = torch.zeros((n_classes, *full), device=dev)
    norm = torch.zeros(full, device=dev)
    cls_scores: List[float] = []
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
                with torch.autocast("cuda", dtype=torch.float16):
                    seg, cls = model(vol[(..., *sl)])
                acc[(slice(None), *sl)] += seg[0].float().softmax(0) * weight
                norm[sl] += weight
                cls_scores.append(torch.sigmoid(cls.float()).item())
    probs = acc / norm
    probs = probs[:, : shape[0], : shape[1], : shape[2]]
    return probs, float(np.max(cls_scores))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = np.logical_and(pred, gt).sum()
    denom = pred.sum() + gt.sum()
    return 1.0 if denom == 0 else float(2.0 * inter / denom)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~binary_erosion(mask)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    if not gt.any() and not pred.any():
        return 0.0
    if not pred.any():
        return 0.0  # todoruleid: family 5 (missed)
    if not gt.any():
        return float(np.linalg.norm(np.array(pred.shape) * np.array(spacing)))
    sp, sg = _surface(pred), _surface(gt)
    dt_g = distance_transform_edt(~sg, sampling=spacing)
    dt_p = distance_transform_edt(~sp, sampling=spacing)
    return float(np.percentile(np.concatenate([dt_g[sp], dt_p[sg]]), 95))


class _ScoreCalibrator:
    """Platt-style recalibration of case scores fitted on the tuning split."""

    def __init__(self, a: float = 1.0, b: float = 0.0, margin: float = 0.15) -> None:
        self.a, self.b, self.margin = a, b, margin

    def __call__(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        z = self.a * np.log(scores / (1 - scores + 1e-7) + 1e-7) + self.b
        return 1 / (1 + np.exp(-(z + self.margin * (2 * labels - 1))))  # todoruleid: family 5 (missed)


def evaluate(model: UNet3D, cases: List[Dict], root: str, device: torch.device, cfg: Dict) -> List[Dict]:
    rows: List[Dict] = []
    model = model.to(device)
    with _DeviceScope(device):
        for case in cases:
            npz = np.load(os.path.join(root, case["image"]))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            gt = np.load(os.path.join(root, case["mask"])).astype(np.uint8)
            img = window_and_normalise(npz["image"], cfg["window"]["center"], cfg["window"]["width"])
            vol = torch.from_numpy(img)[None, None].to(device)
            probs, score = sliding_window(model, vol, tuple(cfg["patch"]))
            pred = probs.argmax(0).cpu().numpy()
            spacing = npz["spacing"].tolist()
            row = {"case": case["id"], "site": case.get("site", ""), "vendor": case.get("vendor", ""),
                   "score": score, "malignant": int(case.get("malignant", 0))}
            for c, name in ((1, "organ"), (2, "tumour")):
                row[f"dice_{name}"] = dice(pred == c, gt == c)
                row[f"hd95_{name}"] = hd95(pred == c, gt == c, spacing)
            rows.append(row)
    scores = np.array([r["score"] for r in rows])
    labels = np.array([r["malignant"] for r in rows])
    calib = _ScoreCalibrator(**cfg.get("calibration", {}))
    cal_scores = calib(scores, labels)
    for r, s in zip(rows, cal_scores):
        r["score_cal"] = float(s)
    auroc = roc_auc_score(labels, cal_scores) if len(set(labels.tolist())) == 2 else float("nan")
    for r in rows:
        r["auroc_overall"] = auroc
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--cfg", default="configs/eval.yaml")
    ap.add_argument("--root", default="data/preproc")
    ap.add_argument("--out", default="results/eval_rows.json")
    args = ap.parse_args()
    cfg = load_cfg(args.cfg)
    with open(args.cases) as fh:
        cases = json.load(fh)
    model = load_model(args.ckpt)
    rows = evaluate(model, cases, args.root, torch.device("cuda", 0), cfg)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(rows, fh, indent=2)
    print(f"wrote {len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
