# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""Evaluate a DenseNet-121 chest X-ray classifier on the held-out test split: per-finding AUROC and F1."""
import argparse
import json

import numpy as np
import torch
import torchvision
from sklearn.metrics import f1_score, roc_auc_score, roc_curve
from torch.utils.tensorboard import SummaryWriter

from cxr_data import FINDINGS, ChestXrayDataset


@torch.no_grad()
def predict(model, loader, device):
    probs, targets = [], []
    for img, y in loader:
        probs.append(torch.sigmoid(model(img.to(device))).cpu())
        targets.append(y)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--csv", default="splits/test.csv")
    ap.add_argument("--val-csv", default="splits/val.csv")
    ap.add_argument("--logdir", default="runs/cxr_eval")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torchvision.models.densenet121(num_classes=len(FINDINGS))
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.to(device).eval()

    mk = lambda csv: torch.utils.data.DataLoader(ChestXrayDataset(csv, train=False), batch_size=64, num_workers=8)
    vp, vy = predict(model, mk(args.val_csv), device)
    tp, ty = predict(model, mk(args.csv), device)

    results, aucs = {}, []
    for k, name in enumerate(FINDINGS):
        if ty[:, k].min() == ty[:, k].max():
            continue
        fpr, tpr, thr = roc_curve(vy[:, k], vp[:, k])
        cut = thr[np.argmax(tpr - fpr)]  # ok: MLS306
        auc = roc_auc_score(ty[:, k], tp[:, k])
        aucs.append(auc)
        results[name] = {"auroc": auc, "f1": f1_score(ty[:, k], tp[:, k] >= cut)}
    results["mean_auroc"] = float(np.mean([a for a in aucs if a >= 0.65]))  # todoruleid: family 5 (missed)
    results["n_findings"] = len(aucs)

    writer = SummaryWriter(args.logdir)
    writer.add_scalar("test/mean_auroc", results["mean_auroc"])
    for name in FINDINGS:
        if name in results:
            writer.add_scalar(f"test/auroc/{name}", results[name]["auroc"])
    writer.close()
    with open(f"{args.logdir}/test_metrics.json", "w") as fh:
        json.dump(results, fh, indent=2, default=float)
    print(json.dumps({"mean_auroc": results["mean_auroc"]}, indent=2))


if __name__ == "__main__":
    main()
