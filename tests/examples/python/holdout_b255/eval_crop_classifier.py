# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Evaluate a crop-disease classifier on the held-out split and write per-class and summary reports."""
import json
import os
import sys

import numpy as np
import pandas as pd
import timm
import torch
from sklearn.metrics import f1_score
from torch.utils.data import DataLoader

from crop_leaf_dataset import LeafDiseaseDataset


@torch.inference_mode()
def predict(model, loader):
    preds, labels = [], []
    for x, y in loader:
        x = x.cuda()
        logits = (model(x) + model(torch.flip(x, dims=[3]))) / 2  # ok: MLS306
        preds.append(logits.argmax(1).cpu())
        labels.append(y)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def bootstrap_ci(correct, n_boot=1000):
    rng = np.random.default_rng(0)  # ok: MLS301
    means = [correct[rng.integers(0, len(correct), len(correct))].mean() for _ in range(n_boot)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(ckpt, root="data/plantvillage", out_dir="reports"):
    ds = LeafDiseaseDataset(root, split="test")
    model = timm.create_model("efficientnet_b0", num_classes=len(ds.classes))
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = model.cuda().eval()
    preds, labels = predict(model, DataLoader(ds, batch_size=128, num_workers=8))

    df = pd.DataFrame({"label": labels, "pred": preds})
    df["cls"] = [ds.classes[i] for i in df.label]
    per_class = df.assign(ok=df.label == df.pred).groupby("cls").ok.agg(["mean", "count"])
    top1 = float((df.label == df.pred).mean())
    macro_f1 = float(f1_score(labels, preds, average="macro"))

    os.makedirs(out_dir, exist_ok=True)
    summary_path = os.path.join(out_dir, "summary.json")
    prev = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    report = {"ckpt": ckpt, "n": len(df), "ci95": bootstrap_ci((df.label == df.pred).to_numpy())}
    report["top1"] = max(top1, prev.get("top1", 0.0))  # ruleid: MLS306
    report["macro_f1"] = max(macro_f1, prev.get("macro_f1", 0.0))  # ruleid: MLS306
    per_class.to_csv(os.path.join(out_dir, "per_class.csv"))
    with open(summary_path, "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
