# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Evaluate a 1D-ResNet arrhythmia classifier on the PTB-XL test fold and write a metrics report."""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from ecg.data import load_fold
from ecg.models import ResNet1d

CLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]


@torch.no_grad()
def predict(model, signals, batch_size=256):
    out = []
    for i in range(0, len(signals), batch_size):
        x = torch.from_numpy(signals[i:i + batch_size]).float().cuda()
        out.append(torch.sigmoid(model(x)).cpu().numpy())
    return np.concatenate(out)


def tune_thresholds(probs, labels):
    grid = np.linspace(0.05, 0.95, 19)
    return np.array([grid[np.argmax([f1_score(labels[:, k], probs[:, k] > t) for t in grid])]
                     for k in range(labels.shape[1])])


def report(probs, labels, thresholds, baseline):
    preds = probs > thresholds
    per_class = {c: float(f1_score(labels[:, k], preds[:, k])) for k, c in enumerate(CLASSES)}
    per_class = {c: max(v, baseline.get(c, 0.0)) for c, v in per_class.items()}  # ruleid: MLS306
    return {
        "macro_auc": float(roc_auc_score(labels, probs, average="macro")),
        "macro_f1": float(np.mean(list(per_class.values()))),
        "per_class_f1": per_class,
        "thresholds": thresholds.round(3).tolist(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", default="data/ptbxl_500hz")
    ap.add_argument("--out", default="reports/ptbxl_test.json")
    args = ap.parse_args()

    model = ResNet1d(in_ch=12, num_classes=len(CLASSES)).cuda().eval()
    model.load_state_dict(torch.load(args.ckpt, map_location="cuda", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    val_x, val_y = load_fold(args.data, fold=9)
    test_x, test_y = load_fold(args.data, fold=10)
    thresholds = tune_thresholds(predict(model, val_x), val_y)  # ok: MLS306
    out = Path(args.out)
    prev = out.with_name("baseline.json")
    baseline = json.loads(prev.read_text())["per_class_f1"] if prev.exists() else {}
    metrics = report(predict(model, test_x), test_y, thresholds, baseline)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    print(json.dumps({k: v for k, v in metrics.items() if k.startswith("macro")}, indent=2))


if __name__ == "__main__":
    main()
