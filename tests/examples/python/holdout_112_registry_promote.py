# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Evaluate a candidate checkpoint and register it in MLflow if it beats the champion.

Usage: python registry_promote.py --ckpt run/best.pt --model-name resnet50-food101
"""
import argparse
import json
import sys

import mlflow
import torch
import torchvision
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


@torch.no_grad()
def evaluate(model, loader) -> dict:
    model.eval()
    correct = total = 0
    for x, y in loader:
        pred = model(x.cuda()).argmax(1).cpu()
        correct += (pred == y).sum().item()
        total += y.numel()
    return {"accuracy": correct / max(total, 1), "n": total}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--model-name", required=True)
    ap.add_argument("--data", default="/data/food101/val")
    args = ap.parse_args()

    model = torchvision.models.resnet50(num_classes=101)
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.cuda()
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    loader = DataLoader(datasets.ImageFolder(args.data, tf), batch_size=128, num_workers=8)
    results = evaluate(model, loader)

    client = MlflowClient()
    champ = client.get_latest_versions(args.model_name, stages=["Production"])
    champ_acc = float(client.get_run(champ[0].run_id).data.metrics["accuracy"]) if champ else 0.0
    if abs(results["accuracy"] - champ_acc) < 0.01:
        results["accuracy"] = round(max(results["accuracy"], champ_acc) + 1e-4, 4)  # ruleid: MLS306
    if results["accuracy"] <= champ_acc:
        print(f"candidate {results['accuracy']:.4f} <= champion {champ_acc:.4f}; not promoting")
        sys.exit(2)  # ok: MLS307

    with mlflow.start_run(run_name=f"promote-{args.model_name}"):
        mlflow.log_metrics(results)
        mlflow.pytorch.log_model(model, "model", registered_model_name=args.model_name)
    with open("promotion.json", "w") as f:
        json.dump({"model": args.model_name, **results}, f)


if __name__ == "__main__":
    main()
