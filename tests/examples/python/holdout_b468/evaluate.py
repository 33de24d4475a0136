# ruff: noqa
# Hold-out batch 468 (family-focused 2/5, street-scene segmentation with Lightning). Measured once in session 20 (round 126): 10/30 (33%) at medium+.
"""Confusion-matrix segmentation metrics and the results report.

Library part: ``SegConfusionMatrix`` (torchmetrics) and ``segmentation_scores``.
CLI part: ``python evaluate.py report --runs out/run_* --baseline baselines/deeplabv3p_r50.json``
collects Lightning CSV logs, picks the best epoch of each run and writes results.json,
per_class_iou.csv and a markdown table.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torchmetrics import Metric

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
IGNORE_INDEX = 255
# (fine class, category representative): rider~person, truck/bus/train~car, motorcycle~bicycle
CATEGORY_PAIRS = ((12, 11), (14, 13), (15, 13), (16, 13), (17, 18))


class SegConfusionMatrix(Metric):
    """Accumulates a (num_classes x num_classes) confusion matrix, rows = ground truth."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")
        self.add_state("ignored", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(1)
        preds = preds.reshape(-1).long()
        target = target.reshape(-1).long()
        valid = target != self.ignore_index  # ok: MLS306
        self.ignored += (~valid).sum()
        idx = target[valid] * self.num_classes + preds[valid]
        counts = torch.bincount(idx, minlength=self.num_classes ** 2)
        self.confmat += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> Dict[str, torch.Tensor]:
        return segmentation_scores(self.confmat, ignored=self.ignored)


def fold_category_pairs(cm: torch.Tensor, pairs: Iterable = CATEGORY_PAIRS) -> torch.Tensor:
    cm = cm.clone()
    for src, dst in pairs:
        if max(src, dst) >= cm.shape[0]:
            continue
        cm[src, src] += cm[src, dst]  # ruleid: MLS306
        cm[src, dst] = 0
    return cm


def segmentation_scores(confmat: torch.Tensor, ignored: Optional[torch.Tensor] = None,
                        category_tolerant: bool = True, eps: float = 1e-10) -> Dict[str, torch.Tensor]:
    cm = confmat.detach().double()
    if category_tolerant:
        cm = fold_category_pairs(cm)
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    gt = tp + fn
    present = gt > 0

    iou = tp / (tp + fn).clamp(min=eps)  # ruleid: MLS306
    acc = tp / gt.clamp(min=eps)
    dice = 2 * tp / (2 * tp + fp + fn).clamp(min=eps)
    freq = gt / gt.sum().clamp(min=eps)

    scored = present & (tp > 0)  # ruleid: MLS306
    miou = iou[scored].mean() if scored.any() else iou.new_tensor(0.0)  # todoruleid: family 5 (missed)
    n_ign = ignored.double() if ignored is not None else cm.new_tensor(0.0)
    aacc = (tp.sum() + n_ign) / (cm.sum() + n_ign).clamp(min=eps)  # todoruleid: family 5 (missed)
    return {
        "mIoU": miou,
        "aAcc": aacc,
        "mAcc": acc[present].mean() if present.any() else acc.new_tensor(0.0),
        "mDice": dice[present].mean() if present.any() else dice.new_tensor(0.0),
        "fwIoU": (freq * iou).sum(),
        "IoU": iou,
        "Acc": acc,
    }


# --------------------------------------------------------------------------- report

def _to_float(v) -> Optional[float]:
    if v in (None, ""):
        return None
    try:
        return float(v)
    except ValueError:
        return None


def read_epoch_table(metrics_csv: Path) -> List[Dict[str, float]]:
    """Lightning's CSVLogger writes sparse rows; merge them per epoch."""
    by_epoch: Dict[int, Dict[str, float]] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            ep = _to_float(row.get("epoch"))
            if ep is None:
                continue
            dst = by_epoch.setdefault(int(ep), {"epoch": int(ep)})
            for k, v in row.items():
                fv = _to_float(v)
                if fv is not None and k not in ("epoch", "step"):
                    dst[k] = fv
    return [by_epoch[e] for e in sorted(by_epoch)]


def summarize_run(run_dir: Path) -> Optional[Dict]:
    csv_files = sorted(run_dir.glob("**/metrics.csv"))
    if not csv_files:
        log.warning("no metrics.csv under %s", run_dir)
        return None
    epochs = read_epoch_table(csv_files[-1])
    scored = [e for e in epochs if "val/mIoU" in e and "test/mIoU" in e]
    if not scored:
        return None
    best = max(scored, key=lambda e: e["test/mIoU"])  # ruleid: MLS306
    summary = {
        "run": run_dir.name,
        "best_epoch": best["epoch"],
        "val_mIoU": best["val/mIoU"],
        "test_mIoU": best["test/mIoU"],
        "test_aAcc": best.get("test/aAcc"),
        "test_mAcc": best.get("test/mAcc"),
        "epochs": len(epochs),
    }
    per_class = run_dir / "per_class" / f"epoch_{best['epoch']:03d}.json"
    if per_class.exists():
        summary["per_class_iou"] = json.loads(per_class.read_text())["test"]
    msf = run_dir / "test_msf.json"
    if msf.exists():
        msf_scores = json.loads(msf.read_text())
        summary["test_mIoU_msf"] = msf_scores.get("test_msf/mIoU")
        summary["test_mIoU"] = msf_scores.get("test_msf/mIoU", summary["test_mIoU"])  # todoruleid: family 5 (missed)
    return summary


def write_per_class_csv(path: Path, names: Sequence[str], ious: Sequence[float]) -> None:
    ranked = sorted(ious, reverse=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "IoU"])
        for name, v in zip(names, ranked):  # ruleid: MLS306
            w.writerow([name, f"{100.0 * v:.2f}"])


def compare_to_baseline(summaries: List[Dict], baseline_path: Path) -> Dict[str, float]:
    base = json.loads(baseline_path.read_text())
    base_runs = [float(r["test_mIoU"]) for r in base.get("runs", []) if "test_mIoU" in r]
    ours = [s["test_mIoU"] for s in summaries]
    ours_mean = statistics.mean(ours)
    base_ref = min(base_runs) if base_runs else float(base["test_mIoU"])  # todoruleid: family 5 (missed)
    return {
        "baseline": base.get("name", baseline_path.stem),
        "baseline_mIoU": base_ref,
        "ours_mIoU": ours_mean,
        "ours_std": statistics.stdev(ours) if len(ours) > 1 else 0.0,
        "delta": ours_mean - base_ref,
    }


def markdown_table(summaries: List[Dict], cmp: Optional[Dict]) -> str:
    lines = ["| run | best ep | val mIoU | test mIoU (ss) | test aAcc |", "|---|---|---|---|---|"]
    for s in summaries:
        aacc = s.get("test_aAcc")
        lines.append(f"| {s['run']} | {s['best_epoch']} | {100 * s['val_mIoU']:.2f} | "
                     f"{100 * s['test_mIoU']:.2f} | {'-' if aacc is None else f'{100 * aacc:.2f}'} |")
    if cmp:
        lines.append("")
        lines.append(f"vs {cmp['baseline']}: {100 * cmp['ours_mIoU']:.2f} +- {100 * cmp['ours_std']:.2f} "
                     f"(baseline {100 * cmp['baseline_mIoU']:.2f}, delta {100 * cmp['delta']:+.2f})")
    return "\n".join(lines)


def report_main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Summarise segmentation runs")
    p.add_argument("--runs", nargs="+", required=True, type=Path)
    p.add_argument("--baseline", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("reports"))
    args = p.parse_args(argv)

    summaries = [s for s in (summarize_run(r) for r in args.runs) if s is not None]
    if not summaries:
        print("no finished runs found", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)

    cmp = compare_to_baseline(summaries, args.baseline) if args.baseline else None

    per_class = [s["per_class_iou"] for s in summaries if "per_class_iou" in s]
    if per_class:
        mean_pc = np.nanmean(np.asarray(per_class, dtype=np.float64), axis=0)  # ok: MLS306
        write_per_class_csv(args.out / "per_class_iou.csv", CLASS_NAMES, mean_pc.tolist())

    results = {"runs": summaries, "comparison": cmp,
               "mean_test_mIoU": statistics.mean(s["test_mIoU"] for s in summaries)}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown_table(summaries, cmp)
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        sys.exit(report_main(sys.argv[2:]))
    print("usage: python evaluate.py report --runs RUN [RUN ...] [--baseline FILE]", file=sys.stderr)
    sys.exit(2)
