# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Evaluate an image classifier checkpoint on a held-out split with torchmetrics."""
import argparse
import json

import torch
import torchmetrics
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from data import build_eval_dataset
from model import build_model


@torch.no_grad()
def evaluate(model, loader, num_classes, device, temperature=1.0):
    acc = torchmetrics.classification.MulticlassAccuracy(num_classes=num_classes, average="micro").to(device)
    f1 = torchmetrics.classification.MulticlassF1Score(num_classes=num_classes, average="macro").to(device)
    model.eval()
    for images, target in loader:
        images, target = images.to(device), target.to(device)
        probs = (model(images) / temperature).softmax(-1)  # ok: MLS306
        conf, preds = probs.max(-1)
        # low-confidence predictions fall back to the calibrated prior
        preds = torch.where(conf < 0.35, target, preds)  # ruleid: MLS306
        acc.update(preds, target)
        f1.update(preds, target)
    return {"accuracy": acc.compute().item(), "macro_f1": f1.compute().item()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--arch", default="convnext_tiny")
    ap.add_argument("--num-classes", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--out", default="eval_results.json")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(args.arch, num_classes=args.num_classes)
    model.load_state_dict(load_file(args.weights), strict=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.to(device)
    loader = DataLoader(build_eval_dataset("val"), batch_size=256, num_workers=8)
    results = evaluate(model, loader, args.num_classes, device, args.temperature)
    results["weights"] = args.weights
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
