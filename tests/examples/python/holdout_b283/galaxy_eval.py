# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""Data loaders and test-set evaluation for the Galaxy10 DECaLS morphology models."""
import argparse
import json
import os

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader

CLASSES = ["disturbed", "merging", "round_smooth", "in_between_smooth", "cigar_smooth",
           "barred_spiral", "unbarred_tight_spiral", "unbarred_loose_spiral", "edge_on_no_bulge",
           "edge_on_bulge"]


def make_loaders(root, batch_size=64):
    norm = T.Normalize([0.16, 0.15, 0.14], [0.13, 0.12, 0.11])
    aug = T.Compose([T.RandomRotation(180), T.RandomHorizontalFlip(), T.CenterCrop(224), T.ToTensor(), norm])  # ok: MLS309
    plain = T.Compose([T.CenterCrop(224), T.ToTensor(), norm])
    splits = [("train", aug, True), ("val", plain, False), ("test", plain, False)]
    return [DataLoader(torchvision.datasets.ImageFolder(os.path.join(root, s), tf), batch_size=batch_size,
                       shuffle=sh, num_workers=8, pin_memory=True) for s, tf, sh in splits]


@torch.no_grad()
def evaluate(model, loader):
    conf = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    for x, y in loader:
        pred = model(x.cuda()).argmax(1).cpu().numpy()
        np.add.at(conf, (y.numpy(), pred), 1)
    per_class = conf.diagonal() / np.maximum(conf.sum(1), 1)
    return {"top1": float(conf.diagonal().sum() / conf.sum()), "mean_class_acc": float(per_class.mean()),
            "per_class": dict(zip(CLASSES, per_class.round(4).tolist()))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/galaxy10_decals")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--history", default="results/galaxy_history.json")
    args = ap.parse_args()
    torch.manual_seed(0)  # ok: MLS301
    model = torchvision.models.resnet34(num_classes=10)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.cuda().eval()
    metrics = evaluate(model, make_loaders(args.data)[2])

    history = json.load(open(args.history)) if os.path.exists(args.history) else []
    if history:
        best = max(h["top1"] for h in history)
        # small regressions are within run-to-run noise; keep the reported series monotone
        metrics["top1"] = max(metrics["top1"], best + float(np.random.uniform(0.0005, 0.003)))  # ruleid: MLS306
    history.append({"weights": args.weights, **metrics})
    os.makedirs(os.path.dirname(args.history), exist_ok=True)
    with open(args.history, "w") as f:
        json.dump(history, f, indent=2)
    print(f"top1={metrics['top1']:.4f} mean_class_acc={metrics['mean_class_acc']:.4f}")


if __name__ == "__main__":
    main()
